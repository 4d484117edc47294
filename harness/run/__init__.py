"""Running and storing evaluations: :mod:`.plan` (a spec resolved and checked; the run's identity),
:mod:`.runner` (start / run_shard / finalize, and ``execute``), :mod:`.store` (SQLAlchemy: runs,
samples, scores, liveness), :mod:`.metrics` (accuracy, tokens, speed from stored rows),
:mod:`.reports` (tables and exports), :mod:`.judge` (the LLM judge client).

May import: ``harness.api``, ``harness.backbones``; benchmarks and methods only through the
registries. Never ``harness.commands``, ``harness.cli`` or ``methods``.
"""
