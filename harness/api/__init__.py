"""The interfaces everything plugs into, and their registries. Imports nothing above it (stdlib only).

- :mod:`.types`: the message format (``Sample``, ``Query``, ``MethodOutput``) and image decoding.
- :mod:`.registry`: name → class registries, filled from entry points.
- :mod:`.benchmark`: ``Benchmark`` (data by position, the per-sample rule, the official score).
- :mod:`.method`: ``Method`` (answers a batch of queries with one backbone).
- :mod:`.recipe`: ``Recipe`` (what is method-specific about training), ``TrainConfig``, ``Schedule``.
- :mod:`.scores`: ``ScoreResult`` (what a benchmark's official score is); :mod:`.hashing`: content hashes.
"""
from harness.api.benchmark import (BENCHMARKS, Benchmark, DataError, Grade, Judge, NotAvailableYet,
                                   register_benchmark)
from harness.api.method import METHODS, Method, coerce_options, register_method
from harness.api.recipe import TRAINERS, Recipe, Schedule, TrainConfig, register_trainer
from harness.api.registry import PluginError, Registry, UnknownName
from harness.api.scores import Bucket, Decided, ScoreResult
from harness.api.types import BadImage, MethodOutput, Query, Sample, decode_image

__all__ = [
    "BENCHMARKS", "Benchmark", "DataError", "Grade", "Judge", "NotAvailableYet", "register_benchmark", "ScoreResult",
    "Bucket", "Decided",
    "METHODS", "Method", "coerce_options", "register_method",
    "TRAINERS", "Recipe", "Schedule", "TrainConfig", "register_trainer",
    "PluginError", "Registry", "UnknownName", "BadImage", "MethodOutput", "Query", "Sample", "decode_image",
]
