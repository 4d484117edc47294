"""The small set of interfaces every benchmark and method plugs into."""
from .benchmark import BENCHMARKS, Benchmark, DataError, Judgement, NotAvailableYet, register_benchmark
from .registry import Registry, UnknownName
from .types import BadImage, MethodOutput, Query, Sample, decode_image

__all__ = [
    "BENCHMARKS", "Benchmark", "DataError", "Judgement", "NotAvailableYet", "register_benchmark",
    "Registry", "UnknownName", "BadImage", "MethodOutput", "Query", "Sample", "decode_image",
]
