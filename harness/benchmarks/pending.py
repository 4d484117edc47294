"""Benchmarks that are registered (so ``harness list`` shows them) but not loadable yet.

Each names the VLMEvalKit dataset and class its loader and official scoring will go through;
constructing one raises :class:`~harness.api.NotAvailableYet` with a one-line explanation.
"""
from __future__ import annotations

from typing import ClassVar, NoReturn

from harness.api import Benchmark, Judgement, NotAvailableYet, Sample, register_benchmark

AVAILABLE_NOW = "m3cot, mmstar"


class PendingBenchmark(Benchmark):
    vlmeval_class: ClassVar[str] = ""  # the VLMEvalKit class that will load and score it

    def __init__(self, data: str | None = None, split: str | None = None):
        self._unavailable()

    def _unavailable(self) -> NoReturn:
        raise NotAvailableYet(
            f"benchmark {self.name} is registered but not available yet: its loader and official scoring "
            f"(VLMEvalKit class {self.vlmeval_class}) land with the benchmarks issue; "
            f"available now: {AVAILABLE_NOW}"
        )

    # The abstract methods exist only so the class can be instantiated far enough to raise.
    def __len__(self) -> int:
        self._unavailable()

    def sample(self, position: int) -> Sample:
        self._unavailable()

    def judge(self, sample: Sample, answer: str) -> Judgement:
        self._unavailable()


@register_benchmark("mathvista")
class MathVista(PendingBenchmark):
    vlmeval_class = "MathVista"
    description = "MathVista testmini (VLMEvalKit MathVista_MINI); official scoring needs an LLM judge (not available yet)"


@register_benchmark("mathverse")
class MathVerse(PendingBenchmark):
    vlmeval_class = "MathVerse"
    description = (
        "MathVerse testmini (VLMEvalKit MathVerse_MINI, _Vision_Only, _Vision_Dominant, _Vision_Intensive, "
        "_Text_Lite, _Text_Dominant); official scoring needs an LLM judge (not available yet)"
    )


@register_benchmark("mmbench")
class MMBench(PendingBenchmark):
    vlmeval_class = "ImageMCQDataset"
    description = (
        "MMBench (VLMEvalKit MMBench_DEV_EN, MMBench_DEV_EN_V11); circular exact-matching evaluation "
        "(not available yet)"
    )


@register_benchmark("mmvp")
class MMVP(PendingBenchmark):
    vlmeval_class = "ImageMCQDataset"
    description = "MMVP (VLMEvalKit MMVP); exact matching with the question-pair metric (not available yet)"


@register_benchmark("pope")
class POPE(PendingBenchmark):
    vlmeval_class = "ImageYORNDataset"
    description = "POPE (VLMEvalKit POPE); yes/no extraction, F1 / accuracy / precision / recall (not available yet)"


@register_benchmark("scienceqa")
class ScienceQA(PendingBenchmark):
    vlmeval_class = "ImageMCQDataset"
    description = "ScienceQA image subset (VLMEvalKit ScienceQA_VAL, ScienceQA_TEST); exact matching (not available yet)"
