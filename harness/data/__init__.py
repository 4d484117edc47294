"""Benchmark and training data on disk: putting it where the loaders look, and cutting it down.

- :mod:`.prepare`: ``harness data prepare``: check a benchmark's downloaded data the way its loader
  will (columns, indexes, every image, the cells VLMEvalKit evaluates, the benchmark's own structure),
  compare VLMEvalKit's md5 and place the file under the official name.
- :mod:`.subset`: ``harness data subset``: a deterministic, category-stratified subset of a
  benchmark's units (``Benchmark.units``: MMBench rotation groups, MMVP pairs, else questions),
  written under a name VLMEvalKit never downloads.
- :mod:`.readers`: the training-data readers registry (``READERS``) recipes train on.

May import ``harness.api``, ``harness.benchmarks`` and ``harness.scoring``; never ``harness.run``,
``harness.commands``, ``harness.cli`` or ``methods``. This file imports nothing, so ``harness.data.readers``
stays as light as it is. Functions take plain arguments and return results; the commands print them.
"""
