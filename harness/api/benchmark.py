"""The benchmark interface and its registry.

A benchmark knows where its data lives and how the official scorer reads a prediction. It yields
:class:`~harness.api.types.Sample` objects by position (so a run can take a deterministic subset and
stream it), says which positions must stay together in a subset (``units``), grades one answer by its
rule (``grade``: extracted answer, correct?), scores a whole run with the official metric (``score``:
a :class:`~harness.api.scores.ScoreResult`) and reads prediction files in its published format
(``read_predictions``). Heavy imports (pandas, datasets, vlmeval) stay inside methods so ``harness list``
is fast.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, ContextManager, Iterator, Protocol

from harness.api.registry import Registry
from harness.api.scores import ScoreResult
from harness.api.types import Sample


class DataError(ValueError):
    """Data that is missing or malformed; the message names the path, the expected format and the fix."""


class NotAvailableYet(DataError):
    """A registered benchmark whose loader and official scoring are not implemented yet."""


class Judge(Protocol):
    """An LLM judge as a benchmark sees it (``harness.run.judge.JudgeConfig`` is one): benchmarks take it
    as an argument and never import the run layer."""

    def scorer_name(self) -> str:
        """How score results name this judge (``ScoreResult["scorer"]``)."""

    def vlmeval_env(self, nproc: int = 1) -> ContextManager[dict]:
        """VLMEvalKit's judge pointed at this one inside the block; yields ``evaluate()``'s keyword arguments."""


@dataclass
class Grade:
    extracted: str  # what the official rule read from the answer ("FAILED" / "" when nothing)
    correct: bool


class Benchmark(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    split: str = "test"
    data_help: ClassVar[str] = ""  # where the data is expected and how to obtain it
    units_label: ClassVar[str] = "questions"  # what one of ``units()`` is, in messages (plural)

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

    def units(self) -> list[list[int]]:
        """Groups of positions that must stay together in a subset (the official metric scores them as one),
        ordered by their first position, each in position order. By default every position alone."""
        return [[position] for position in range(len(self))]

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

    def reference_scores(self, samples: list[Sample], texts: list[str]) -> list[ScoreResult]:
        """Scores by published methods' own evaluation rules over the full generated ``texts`` (kind
        ``"reference"``, stored beside the official score, never instead of it). Default: none."""
        return []

    def score(self, samples: list[Sample], answers: list[str], judge: Judge | None = None) -> ScoreResult:
        """Official metrics for a whole run: ``{"overall": {...}, "by_category": {...}, "scoring": ...}``.

        The default counts per-sample grades; benchmarks whose official metric is not a mean of
        per-sample scores (circular MMBench, MMVP pairs, POPE F1) override it. ``judge`` (a
        :class:`Judge`) matters only to benchmarks officially scored by an LLM judge
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

    # -- prediction files --------------------------------------------------------------------
    def read_predictions(self, path: Path) -> tuple[list[Sample], list[str]]:
        """The samples and final answers of a prediction file in this benchmark's published format (what
        ``harness score`` reads); a DataError naming the file and the fix when it is not one."""
        raise DataError(f"{path}: the {self.name} benchmark reads no prediction files (it defines no format); "
                        "score its answers with `harness run`")

    def score_predictions(self, path: Path, judge: Judge | None = None) -> ScoreResult:
        """The official metrics of a prediction file: :meth:`score` on what :meth:`read_predictions` reads."""
        samples, answers = self.read_predictions(path)
        return self.score(samples, answers, judge=judge)


BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark", "harness.benchmarks")
register_benchmark = BENCHMARKS.register
