"""The compare tab: two stored runs through :func:`harness.analysis.compare.compare_outcomes`, described."""
from __future__ import annotations

from typing import Any

from harness.analysis.compare import compare_outcomes

from .queries import LeaderboardDB


def compare_runs(db: LeaderboardDB, run_a: int, run_b: int, *, n_resamples: int = 10_000,
                 seed: int = 0) -> dict[str, Any]:
    """:func:`compare_outcomes` on two runs of the leaderboard's database."""
    return compare_outcomes(db.sample_outcomes(run_a), db.sample_outcomes(run_b), run_a, run_b,
                            n_resamples=n_resamples, seed=seed)


def describe(summary: dict[str, Any]) -> str:
    """Markdown for the compare tab."""
    s = summary
    if not s["shared"]:
        return (f"Runs {s['run_a']} and {s['run_b']} share no samples (matched by uid): "
                "nothing to compare.")
    sig = "significant" if s["mcnemar_p"] < 0.05 else "not significant"
    return (f"**{s['shared']} shared samples** (run {s['run_a']}: {s['n_a']} rows, run {s['run_b']}: {s['n_b']}).  \n"
            f"Accuracy on them: A {s['accuracy_a']:.2f} %, B {s['accuracy_b']:.2f} %; "
            f"B − A = **{s['diff']:+.2f}** points (95 % paired bootstrap interval {s['diff_low']:+.2f} to "
            f"{s['diff_high']:+.2f}, p = {s['bootstrap_p']:.3g}, {s['n_resamples']} resamples).  \n"
            f"Flips: {s['right_to_wrong']} right→wrong, {s['wrong_to_right']} wrong→right "
            f"({s['both_right']} both right, {s['both_wrong']} both wrong). "
            f"McNemar exact p = **{s['mcnemar_p']:.3g}** ({sig} at 0.05).")
