"""Statistics over stored runs: paired tests (:mod:`.paired`: exact McNemar, paired bootstrap) and run
comparison (:mod:`.compare`: flips between two runs on their shared samples).

Used by the leaderboard and by regression checks. May import: numpy, pandas, ``harness.api``; never
the store, the runner, commands or methods (callers pass per-sample tables in).
"""
