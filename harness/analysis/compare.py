"""Two runs side by side on the samples both answered: flips and paired significance.

Used by the leaderboard's compare tab and by regression checks; reads plain per-sample tables, never
the store or the leaderboard.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from harness.analysis.paired import mcnemar_exact, paired_bootstrap


def compare_outcomes(a: pd.DataFrame, b: pd.DataFrame, run_a: int, run_b: int, *, n_resamples: int = 10_000,
                     seed: int = 0) -> dict[str, Any]:
    """Per-sample flips between run A and run B (matched by sample uid; an error row counts as
    wrong, as in the run's accuracy) and McNemar's exact test plus a paired bootstrap on them.

    ``a`` and ``b``: one row per sample with columns uid, position, category, gold, extracted,
    correct, error (``Store.samples`` rows as a DataFrame).
    """
    both = a.merge(b, on="uid", suffixes=("_a", "_b"))
    ra = both["correct_a"].fillna(False).astype(bool) & both["error_a"].isna()
    rb = both["correct_b"].fillna(False).astype(bool) & both["error_b"].isna()
    both = both.assign(right_a=ra, right_b=rb)
    flip = pd.Series("", index=both.index, dtype=object)
    flip[ra & ~rb] = "right→wrong"
    flip[~ra & rb] = "wrong→right"
    both["flip"] = flip
    n_rw, n_wr = int((ra & ~rb).sum()), int((~ra & rb).sum())
    summary: dict[str, Any] = {
        "run_a": int(run_a), "run_b": int(run_b), "n_a": len(a), "n_b": len(b), "shared": len(both),
        "right_to_wrong": n_rw, "wrong_to_right": n_wr,
        "both_right": int((ra & rb).sum()), "both_wrong": int((~ra & ~rb).sum()),
    }
    if len(both):
        summary["accuracy_a"] = round(100 * float(ra.mean()), 2)
        summary["accuracy_b"] = round(100 * float(rb.mean()), 2)
        summary["mcnemar_p"] = mcnemar_exact(n_rw, n_wr)
        boot = paired_bootstrap(ra.to_numpy(), rb.to_numpy(), n_resamples=n_resamples, seed=seed)
        summary.update(diff=round(boot.diff, 2), diff_low=round(boot.low, 2), diff_high=round(boot.high, 2),
                       bootstrap_p=boot.p_value, n_resamples=boot.n_resamples)
    flips = both[both["flip"] != ""][["uid", "position_a", "category_a", "gold_a", "extracted_a", "extracted_b",
                                      "flip"]]
    flips = flips.rename(columns={"position_a": "position", "category_a": "category", "gold_a": "gold",
                                  "extracted_a": "A extracted", "extracted_b": "B extracted"})
    return {"summary": summary, "flips": flips.reset_index(drop=True)}
