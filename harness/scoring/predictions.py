"""Score a prediction file through the same code path as a run (``harness score``).

Generic: the benchmark reads the file in its own published format (``Benchmark.read_predictions``:
VLMEvalKit's prediction format for the VLMEvalKit benchmarks, M3CoT's jsonl for M3CoT) and scores it
with its ``score``, exactly as at the end of a run (``Benchmark.score_predictions``).
"""
from __future__ import annotations

from pathlib import Path

from harness.api import BENCHMARKS
from harness.api.benchmark import Judge
from harness.api.scores import ScoreResult


def score_predictions(bench: str, predictions: str | Path, data: str | None = None, split: str | None = None,
                      judge: Judge | None = None) -> ScoreResult:
    """The benchmark's official metrics for a prediction file (the dict a run stores)."""
    benchmark = BENCHMARKS.get(bench)(data, split)  # its data first: a missing file is named before the predictions
    return benchmark.score_predictions(Path(predictions).expanduser(), judge=judge)
