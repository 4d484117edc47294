"""Official scoring rules that VLMEvalKit does not provide (M3CoT's answer extraction and accuracy, its
prediction-file format) and the generic scoring of a prediction file (``harness score``).

May import ``harness.api`` only (the rules themselves are stdlib only, so the leaderboard and the CLI
score files without torch or pandas). Benchmarks import these rules, never the reverse; a prediction
file reaches its benchmark through the ``BENCHMARKS`` registry.
"""
