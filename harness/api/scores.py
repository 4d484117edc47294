"""What ``Benchmark.score()`` returns: the official metrics of a run, as the store saves them.

TypedDicts, not classes: a result stays a plain ``dict`` (read with ``result["overall"]``, dumped to JSON
as is), so stored runs written before these types existed read the same. Stdlib only.
"""
from __future__ import annotations

from typing import TypedDict


class _BucketCounts(TypedDict):
    correct: int  # units scored right (questions; MMBench rotation groups; MMVP pairs)
    total: int
    accuracy: float | None  # percent, 2 decimals; POPE's VLMEvalKit number may be None (nothing to rate)


class Bucket(_BucketCounts, total=False):
    """One group's numbers (``overall`` or one category). The extra keys are a benchmark's own metrics."""

    question_accuracy: float  # MMVP: VLMEvalKit's per-question "Average" beside the pair accuracy
    f1: float | None  # POPE: F1 ("Overall" of POPE_rating), precision and recall, percent
    precision: float | None
    recall: float | None


class Decided(TypedDict):
    """Rule-based scoring (MathVista, MathVerse without a judge): answers the rule could decide."""

    correct: int
    wrong: int


class _ScoreRequired(TypedDict):
    scoring: str  # "official" (the benchmark's own metric), "judge" (with an LLM judge), "rule-based"; "reference" (a published method's own rule)
    overall: Bucket
    by_category: dict[str, Bucket]  # the benchmark's category column (M3CoT: domain; MathVerse: version)


class ScoreResult(_ScoreRequired, total=False):
    """The result of ``Benchmark.score()``; only ``scoring``, ``overall`` and ``by_category`` are always there."""

    scorer: str  # who decided: the judge (``judge:MODEL@URL``) or the labelled rule
    undecided: int  # rule-based: answers the rule could not read (scored wrong; a judge would decide)
    decided: Decided
    note: str  # rule-based: why the number is a lower bound and how to get the official one
    unit: str  # what ``correct``/``total`` count when it is not a question ("rotation group ...")
    primary: str  # the headline metric when it is not ``accuracy`` (POPE: "f1")
    counting: str  # how rows are counted when it is not once each (POPE's multi-category rows)
    groups_incomplete: int  # MMBench: rotation groups left out because some rotation was not given
    pairs_incomplete: int  # MMVP: question pairs left out because one question was not given
    by_topic: dict[str, Bucket]  # M3CoT
    by_domain: dict[str, Bucket]  # M3CoT prediction files (``harness score``): the same as by_category
    by_skill: dict[str, Bucket]  # MathVista
    vlmeval: dict  # VLMEvalKit's own result table and the dataset name / judge it used
