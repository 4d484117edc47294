"""What tests, demos and conformance checks need: :mod:`.fixtures` (small subsets in each benchmark's
official format, images drawn here) and :mod:`.conformance` (harness scoring against stock VLMEvalKit).

May import: ``harness.api``, ``harness.benchmarks``, ``harness.scoring``; never run, commands or methods.
"""
