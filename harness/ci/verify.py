"""A suite against its golden baselines (:func:`verify`), or the baselines rewritten (:func:`update`).

Exit codes (:func:`exit_code`): 0 every check passed (warnings and skips allowed); 1 a regression;
2 anything that could not be checked (a bad suite, a missing or stale baseline, a case that errored),
which wins over 1: never 0 on anything unchecked.
"""
from __future__ import annotations

import logging
import sys
import time
import traceback

from harness.ci import baseline, checks
from harness.ci.checks import Check
from harness.ci.run import CaseRun, Ledger, run_case

log = logging.getLogger("harness")


def exit_code(results: list[Check]) -> int:
    verdicts = {c.verdict for c in results}
    return 2 if "error" in verdicts else 1 if "fail" in verdicts else 0


def _one_line(exc: BaseException) -> str:
    text = " ".join("".join(traceback.format_exception_only(type(exc), exc)).split())
    return text[:400]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(case, suite, db, ledger) -> tuple[CaseRun | None, str | None, float]:
    began = time.perf_counter()
    try:
        result = run_case(case, suite, db, ledger)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001  a case that cannot run is reported (exit 2), the others still run
        log.debug("case %s failed", case.name, exc_info=True)
        return None, _one_line(exc), time.perf_counter() - began
    seconds = time.perf_counter() - began
    how = "reused" if result.run["reused"] else f"{result.run['computed']} computed"
    accuracy = result.metrics.get("accuracy")
    _say(f"ci: {case.name}: run {result.run['run_id']} ({how}), accuracy "
         f"{'-' if accuracy is None else f'{accuracy:.1f}'} %, {seconds:.1f} s")
    return result, None, seconds


def _ratio(metrics: dict, reference: dict | None) -> float | None:
    a, b = metrics.get("samples_per_second"), (reference or {}).get("samples_per_second")
    return a / b if a and b else None


def verify(suite, cases, db: str, ledger: Ledger) -> tuple[list[Check], dict, dict[str, float]]:
    """Run ``cases`` and check each against its baseline; returns (checks, per-case info, seconds)."""
    results: list[Check] = []
    info: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    golden: dict[str, tuple[list[dict], dict]] = {}
    now: dict[str, CaseRun] = {}
    for case in cases:
        try:
            golden[case.name] = baseline.load(suite.baselines, case)
        except baseline.BaselineError as exc:
            results.append(Check(case.name, "baseline", "error", detail=str(exc)))
            continue
        run, error, seconds[case.name] = _run(case, suite, db, ledger)
        if run is None:
            results.append(Check(case.name, "run", "error", detail=error))
            continue
        now[case.name] = run
        rows, summary = golden[case.name]
        info[case.name] = {"run": run.run, "platform": run.platform, "golden_platform": summary.get("platform"),
                           "metrics": {k: run.metrics.get(k) for k in baseline.METRIC_KEYS}}
        g_uids, n_uids = {r["uid"] for r in rows}, {r["uid"] for r in run.rows}
        if g_uids != n_uids:
            results.append(Check(case.name, "samples", "error", golden=f"{len(g_uids)} uids", now=f"{len(n_uids)} uids",
                                 detail=f"the case now covers other samples ({len(g_uids - n_uids)} gone, "
                                        f"{len(n_uids - g_uids)} new): the data changed; inspect it, then "
                                        f"`harness ci --update {case.name}`"))
            continue
        records = [baseline.sample_record(r) for r in run.rows]
        mode = case.check
        if mode == "auto":
            mode = "exact" if run.platform == summary.get("platform") else "statistical"
        if mode == "exact":
            results.append(checks.exact(case.name, rows, records))
        else:
            check = checks.statistical(case.name, rows, records, band=case.band, alpha=case.alpha)
            if case.check == "auto":
                check.detail += " (platform differs from the baseline's: statistical check)"
            results.append(check)
        results.append(checks.growth(case.name, "tokens", "generated_tokens", rows, records, band=case.tokens_band))
        results.append(checks.growth(case.name, "latent steps", "latent_steps", rows, records, band=case.tokens_band))
    for case in cases:  # speed last: it needs the reference case measured in this invocation
        if case.name not in now or case.speed_reference is None:
            continue
        ref = case.speed_reference
        if ref == case.name:
            results.append(Check(case.name, "speed", "skip", detail="the reference case itself"))
            continue
        if ref not in now or ref not in golden:
            results.append(Check(case.name, "speed", "skip", detail=f"reference case {ref} did not run"))
            continue
        if not (now[case.name].measured_now and now[ref].measured_now):
            results.append(Check(case.name, "speed", "skip",
                                 detail="answers reused from an earlier invocation: no timing measured now"))
            continue
        results.append(checks.speed(case.name, _ratio(golden[case.name][1]["metrics"], golden[ref][1]["metrics"]),
                                    _ratio(now[case.name].metrics, now[ref].metrics), band=case.speed_band,
                                    mode=case.speed, reference=ref))
    return results, info, seconds


def update(suite, cases, db: str, ledger: Ledger) -> tuple[list[Check], dict, dict[str, float]]:
    """Run ``cases`` and rewrite their baselines; each result says what changed against the old one."""
    results, info, seconds = [], {}, {}
    for case in cases:
        run, error, seconds[case.name] = _run(case, suite, db, ledger)
        if run is None:
            results.append(Check(case.name, "update", "error", detail=error))
            continue
        records = [baseline.sample_record(r) for r in run.rows]
        try:
            old_rows, old = baseline.load(suite.baselines, case)
        except baseline.BaselineError:
            old_rows, old = None, None
        baseline.write(suite.baselines, case, run.rows, run.metrics, run.platform,
                       {"git_commit": run.run.get("git_commit")})
        info[case.name] = {"run": run.run, "platform": run.platform,
                           "metrics": {k: run.metrics.get(k) for k in baseline.METRIC_KEYS}}
        acc = run.metrics.get("accuracy")
        acc = "-" if acc is None else f"{acc:.1f}"
        if old_rows is None or {r["uid"] for r in old_rows} != {r["uid"] for r in records}:
            results.append(Check(case.name, "update", "pass", golden="(none)" if old_rows is None else "other samples",
                                 now=f"{acc} %", detail=f"baseline written: {len(records)} samples"))
            continue
        changed = checks.exact(case.name, old_rows, records)
        results.append(Check(case.name, "update", "pass", golden=f"{old['metrics'].get('accuracy') or 0:.1f} %", now=f"{acc} %",
                             detail=(f"baseline rewritten: {changed.detail}" if changed.flips
                                     else "baseline rewritten: no answer changed"), flips=changed.flips))
    return results, info, seconds
