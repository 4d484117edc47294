"""The checks of one case against its golden baseline: plain functions of per-sample rows and metrics.

- *exact*: every sample's prediction, extracted answer, grading and error as in the baseline.
- *statistical*: fails only when accuracy drops by more than ``band`` points **and** McNemar's exact
  test on the paired flips (right→wrong vs wrong→right) is significant at ``alpha``; for platforms
  whose arithmetic differs from the baseline's (GPU vs CPU, other library versions).
- *tokens* / *latent steps*: the mean per answered sample may grow by ``tokens_band`` (a fraction).
- *speed*: samples/s divided by the reference case's, measured in the same invocation, may fall by
  ``speed_band``; a warning unless the case sets ``speed = "fail"``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.analysis.paired import mcnemar_exact

VERDICTS = ("pass", "fail", "warn", "skip", "error")


@dataclass
class Check:
    case: str
    check: str
    verdict: str
    golden: str = ""
    now: str = ""
    detail: str = ""
    flips: list[dict] = field(default_factory=list)  # uid, golden/now extracted and right, for changed samples

    def to_dict(self) -> dict:
        return {"case": self.case, "check": self.check, "verdict": self.verdict, "golden": self.golden,
                "now": self.now, "detail": self.detail, "flips": self.flips}


def _right(row: dict) -> bool:
    """As a run's accuracy counts it: graded correct and not an error row."""
    return row.get("correct") is True and not row.get("error")


def _flip(uid: str, g: dict, n: dict) -> dict:
    return {"uid": uid, "golden": g.get("extracted"), "now": n.get("extracted"),
            "golden_right": _right(g), "now_right": _right(n)}


def paired(golden: list[dict], now: list[dict]) -> list[tuple[str, dict, dict]]:
    """(uid, golden row, new row) for every uid, in uid order; the uid sets must be equal."""
    by_uid = {r["uid"]: r for r in now}
    return [(g["uid"], g, by_uid[g["uid"]]) for g in sorted(golden, key=lambda r: r["uid"])]


def exact(case: str, golden: list[dict], now: list[dict]) -> Check:
    keys = ("prediction", "extracted", "correct", "error")
    changed = [_flip(uid, g, n) for uid, g, n in paired(golden, now) if any(g.get(k) != n.get(k) for k in keys)]
    detail = ""
    if changed:
        shown = ", ".join(f["uid"] for f in changed[:10]) + (" ..." if len(changed) > 10 else "")
        detail = f"{len(changed)} sample(s) answer differently: {shown}"
    return Check(case, "exact", "fail" if changed else "pass", golden=f"{len(golden)} samples",
                 now=f"{len(changed)} changed", detail=detail, flips=changed)


def statistical(case: str, golden: list[dict], now: list[dict], *, band: float, alpha: float) -> Check:
    pairs = paired(golden, now)
    b = sum(_right(g) and not _right(n) for _, g, n in pairs)  # right → wrong
    c = sum(not _right(g) and _right(n) for _, g, n in pairs)  # wrong → right
    acc_g = 100.0 * sum(_right(g) for _, g, _ in pairs) / len(pairs)
    acc_n = 100.0 * sum(_right(n) for _, _, n in pairs) / len(pairs)
    drop, p = acc_g - acc_n, mcnemar_exact(b, c)
    failed = drop > band and p < alpha
    flips = [_flip(uid, g, n) for uid, g, n in pairs if _right(g) != _right(n)]
    detail = (f"drop {drop:.1f} points (band {band:g}), {b} right→wrong / {c} wrong→right, "
              f"McNemar p = {p:.3g} (alpha {alpha:g})")
    return Check(case, "statistical", "fail" if failed else "pass", golden=f"{acc_g:.1f} %", now=f"{acc_n:.1f} %",
                 detail=detail, flips=flips)


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r.get(key) for r in rows if not r.get("error") and r.get(key) is not None]
    return sum(values) / len(values) if values else None


def growth(case: str, name: str, key: str, golden: list[dict], now: list[dict], *, band: float) -> Check:
    """Mean ``key`` (generated tokens, latent steps) per answered sample may grow by ``band``."""
    g, n = _mean(golden, key), _mean(now, key)
    if g is None and n is None:
        return Check(case, name, "skip", detail=f"no {key} recorded")
    if g is None or n is None:
        return Check(case, name, "fail", golden=str(g), now=str(n), detail=f"{key} recorded only on one side")
    limit = g * (1 + band)
    failed = n > limit + 1e-9
    change = f"{100 * (n - g) / g:+.1f} %" if g else ("+inf" if n > 0 else "+0 %")
    return Check(case, name, "fail" if failed else "pass", golden=f"{g:.2f}", now=f"{n:.2f}",
                 detail=f"{change} (band +{100 * band:g} %)")


def speed(case: str, golden_ratio: float | None, now_ratio: float | None, *, band: float, mode: str,
          reference: str) -> Check:
    """Samples/s relative to the reference case, golden vs now; ``mode``: "warn" or "fail"."""
    if golden_ratio is None or now_ratio is None:
        return Check(case, "speed", "skip", detail="no comparable measurement (see the case's detail)")
    slower = now_ratio < golden_ratio * (1 - band)
    change = 100 * (now_ratio - golden_ratio) / golden_ratio
    return Check(case, "speed", (mode if slower else "pass"), golden=f"{golden_ratio:.3f}", now=f"{now_ratio:.3f}",
                 detail=f"samples/s relative to {reference}: {change:+.1f} % (band -{100 * band:g} %)")
