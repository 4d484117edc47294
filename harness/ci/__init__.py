"""`harness ci`: regression checks on small subsets against golden per-sample baselines.

:mod:`.suite` reads the TOML suite, :mod:`.run` runs a case through the normal runner, :mod:`.baseline`
reads and writes the golden files, :mod:`.checks` compares (exact, statistical, tokens, speed),
:mod:`.verify` puts them together with the exit code, :mod:`.reports` writes the table, JUnit,
Markdown and JSON.
"""
