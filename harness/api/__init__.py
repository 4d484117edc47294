"""The interfaces everything plugs into, and their registries. Imports nothing above it (stdlib only).

- :mod:`.types`: the message format (``Sample``, ``Query``, ``MethodOutput``) and image decoding.
- :mod:`.registry`: name → class registries, filled from entry points.
- :mod:`.benchmark`: ``Benchmark`` (data by position, the per-sample rule, the official score).
- :mod:`.method`: ``Method`` (answers a batch of queries with one backbone).
- :mod:`.recipe`: ``Recipe`` (what is method-specific about training).
"""
from harness.api.benchmark import BENCHMARKS, Benchmark, DataError, Grade, NotAvailableYet, register_benchmark
from harness.api.method import METHODS, Method, coerce_options, register_method
from harness.api.recipe import TRAINERS, Recipe, register_trainer
from harness.api.registry import PluginError, Registry, UnknownName
from harness.api.types import BadImage, MethodOutput, Query, Sample, decode_image

__all__ = [
    "BENCHMARKS", "Benchmark", "DataError", "Grade", "NotAvailableYet", "register_benchmark",
    "METHODS", "Method", "coerce_options", "register_method",
    "TRAINERS", "Recipe", "Schedule", "TrainConfig", "register_trainer",
    "PluginError", "Registry", "UnknownName", "BadImage", "MethodOutput", "Query", "Sample", "decode_image",
]
