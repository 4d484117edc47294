"""Run-level metrics computed from stored sample rows (no heavy imports)."""
from __future__ import annotations

import math
from typing import Any, Iterable


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarize(samples: list[dict[str, Any]], wall_seconds: float | None = None) -> dict[str, Any]:
    """Accuracy (percent, with binomial SE), token and speed statistics for one run.

    Error samples (could not be run) count as answered wrong and stay in n, so a method cannot
    gain accuracy by failing on hard inputs; token and latency means use the samples that ran.
    """
    n = len(samples)
    ok = [s for s in samples if not s.get("error")]
    right = [s for s in ok if s.get("correct") is True]
    p = len(right) / n if n else None
    latency = sum(s.get("latency_s") or 0.0 for s in ok)

    by_cat: dict[str, list[int]] = {}
    for s in samples:
        c = by_cat.setdefault(s.get("category") or "", [0, 0])
        c[0] += 1
        c[1] += s.get("correct") is True and not s.get("error")

    return {
        "n": n,
        "n_errors": n - len(ok),
        "correct": len(right),
        "accuracy": _r(100 * p) if p is not None else None,
        "accuracy_se": _r(100 * math.sqrt(p * (1 - p) / n)) if p is not None else None,
        "mean_generated_tokens": _r(_mean(s.get("generated_tokens") for s in ok)),
        # The LaRe paper's "# Tokens": generation length on correctly answered samples.
        "mean_generated_tokens_correct": _r(_mean(s.get("generated_tokens") for s in right)),
        "mean_input_tokens": _r(_mean(s.get("input_tokens") for s in ok)),
        "mean_latent_steps": _r(_mean(s.get("latent_steps") for s in ok)),
        # Summed per-sample method time, not wall clock, so resumed runs stay comparable.
        "samples_per_second": _r(len(ok) / latency) if latency > 0 else None,
        "mean_latency_s": _r(_mean(s.get("latency_s") for s in ok)),
        "wall_seconds": _r(wall_seconds),
        "by_category": {k: {"n": c[0], "correct": c[1], "accuracy": _r(100 * c[1] / c[0])}
                        for k, c in sorted(by_cat.items())} if any(by_cat) else {},
    }
