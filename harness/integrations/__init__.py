"""The harness inside other tools: :mod:`.vlmeval_model` makes every registered method a VLMEvalKit model.

May import: ``harness.api``, ``harness.run.plan`` (the same load sequence as ``harness run``),
``harness.benchmarks`` (the guarded VLMEvalKit import and data checks); never commands or methods.
"""
