"""The benchmark interface and its registry.

A benchmark knows where its data lives and how the official scorer reads a prediction. It yields
:class:`~harness.api.types.Sample` objects by position (so a run can take a deterministic subset and
stream it), grades one answer by its rule (``grade``: extracted answer, correct?) and scores a whole run with the official
metric. Heavy imports (pandas, datasets, vlmeval) stay inside methods so ``harness list`` is fast.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterator

from harness.api.registry import Registry
from harness.api.types import Sample


class DataError(ValueError):
    """Data that is missing or malformed; the message names the path, the expected format and the fix."""


class NotAvailableYet(DataError):
    """A registered benchmark whose loader and official scoring are not implemented yet."""


@dataclass
class Grade:
    extracted: str  # what the official rule read from the answer ("FAILED" / "" when nothing)
    correct: bool


class Benchmark(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    split: str = "test"
    data_help: ClassVar[str] = ""  # where the data is expected and how to obtain it

    def __init__(self, data: str | None = None, split: str | None = None):
        self.data = data
        if split:
            self.split = split

    # -- data --------------------------------------------------------------------------------
    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def sample(self, position: int) -> Sample:
        """The sample at ``position`` in the data's own order; images stay undecoded."""

    def samples(self, positions: list[int] | None = None) -> Iterator[Sample]:
        for position in range(len(self)) if positions is None else positions:
            yield self.sample(position)

    def fingerprint(self) -> str:
        """A content hash of the data, stored with the run so results name exactly what was scored."""
        return ""

    def format_question(self, sample: Sample) -> str:
        """The question as the model reads it: context, question and lettered options."""
        parts = []
        if sample.context:
            parts.append(f"Context: {sample.context}")
        parts.append(f"Question: {sample.question}")
        if sample.choices:
            parts.append("Options:")
            parts.extend(f"({chr(65 + i)}) {choice}" for i, choice in enumerate(sample.choices))
        return "\n".join(parts)

    # -- scoring -----------------------------------------------------------------------------
    @abstractmethod
    def grade(self, sample: Sample, answer: str) -> Grade:
        """Apply the official answer-extraction rule to one final answer text."""

    def score(self, samples: list[Sample], answers: list[str], judge=None) -> dict:
        """Official metrics for a whole run: ``{"overall": {...}, "by_category": {...}, "scoring": ...}``.

        The default counts per-sample grades; benchmarks whose official metric is not a mean of
        per-sample scores (circular MMBench, MMVP pairs, POPE F1) override it. ``judge`` (a
        :class:`harness.run.judge.JudgeConfig`) matters only to benchmarks officially scored by an LLM judge
        (MathVista, MathVerse: ``"scoring": "judge"`` with it, ``"rule-based"`` without); the others
        ignore it and return ``"scoring": "official"``.
        """
        overall = {"correct": 0, "total": 0}
        by_category: dict[str, dict] = {}
        for sample, answer in zip(samples, answers):
            correct = self.grade(sample, answer).correct
            for bucket in (overall, by_category.setdefault(sample.category or "all", {"correct": 0, "total": 0})):
                bucket["correct"] += int(correct)
                bucket["total"] += 1
        for bucket in (overall, *by_category.values()):
            bucket["accuracy"] = round(100.0 * bucket["correct"] / bucket["total"], 2) if bucket["total"] else 0.0
        return {"scoring": "official", "overall": overall, "by_category": dict(sorted(by_category.items()))}


BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark", "harness.benchmarks")
register_benchmark = BENCHMARKS.register
