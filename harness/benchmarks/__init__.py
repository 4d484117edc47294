"""Built-in benchmarks, one module each: their data loaders, per-sample rules (``grade``), official
scores (``score``), subset units (``units``) and prediction-file formats (``read_predictions``).

``vlmeval_common`` holds what the VLMEvalKit benchmarks share, including the one guard around
``import vlmeval`` (:func:`~harness.benchmarks.vlmeval_common.import_vlmeval`). pyproject.toml declares
every benchmark module in the entry-point group ``harness.benchmarks``; a module registers its class on
import and keeps heavy imports (pandas, datasets, vlmeval) inside functions.

May import ``harness.api`` and ``harness.scoring`` (rules that are not VLMEvalKit's, e.g. M3CoT's); never
``harness.data``, ``harness.run``, ``harness.commands``, ``harness.cli`` or ``methods``. An LLM judge
arrives as an argument (``harness.api.benchmark.Judge``), never by import.
"""
