"""The runner: benchmark samples → method (with a backbone) → graded rows in the store.

Data flows one way, in four steps that distributed evaluation and ``harness ci`` reuse one by one:
:func:`~harness.run.plan.plan` resolves the spec (failing fast on bad names, options or data, before
any model is loaded); :func:`start` loads nothing itself but opens the run's row, found by the key
over everything that determines its outputs (so the same command resumes it; ``fresh`` starts over);
:func:`run_shard` streams a share of the positions in batches (images decoded per batch, each batch
answered, graded and written in one transaction); :func:`finalize` scores the stored rows with the
benchmark's official rule. :func:`execute` is the four in one process.
"""
from __future__ import annotations

import logging
import resource
import sys
import traceback
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from harness.api import BadImage, DataError, Query, Sample
from harness.api.types import DEFAULT_MAX_IMAGE_PIXELS
from harness.run.judge import JudgeConfig
from harness.run.plan import RunPlan, RunSpec, load_plan, plan, select_positions  # noqa: F401  (the runner's API)

if TYPE_CHECKING:
    from harness.run.store import Store

log = logging.getLogger("harness")


@dataclass
class RunReport:
    run_id: int
    db_url: str
    resumed: bool
    n_new: int
    metrics: dict
    official: dict
    judged: dict | None = None  # the judge's scoring, when RunSpec.judge was given


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm, Docker): handled like Ctrl-C, the run is marked interrupted."""


@dataclass
class OpenRun:
    """A planned run with its backbone loaded and its row in the store: what a shard writes into."""
    plan: RunPlan
    store: "Store"
    backbone: object
    run_id: int
    resumed: bool
    pending: list[int]  # planned positions with no stored row yet
    device: str


def start(p: RunPlan, store: "Store", backbone) -> OpenRun:
    """The run's row: found by its key (resumed: only the missing positions are pending) or created."""
    fields = p.fields(backbone)
    run_id, done, resumed = store.start_run(p.key(backbone, fields), fields, fresh=p.spec.fresh)
    # Only a resumed run needs each row's uid up front; a new one computes everything.
    pending = [q for q in p.positions if _uid_at(p.benchmark, q) not in done] if done else list(p.positions)
    log.info("run %d (%s): %d of %d samples to compute", run_id, "resumed" if resumed else "new",
             len(pending), len(p.positions))
    return OpenRun(plan=p, store=store, backbone=backbone, run_id=run_id, resumed=resumed, pending=pending,
                   device=fields["device"])


def run_shard(run: OpenRun, positions: list[int], on_rows=None) -> int:
    """Compute and store the rows of ``positions`` (a share of the plan's), one transaction per batch.

    Rows are keyed by position, so shards may run in any order or process; returns the rows written.
    """
    p, n_new = run.plan, 0
    for begin in range(0, len(positions), p.batch_size):
        rows = _run_batch(p.method, run.backbone, p.benchmark, positions[begin:begin + p.batch_size],
                          p.spec.max_image_pixels)
        run.store.add_samples(run.run_id, rows)
        n_new += len(rows)
        if on_rows is not None:
            on_rows(len(rows))
    return n_new


def finalize(run: OpenRun) -> tuple[dict, dict]:
    """Once every share is stored: run metrics and the official score over the stored rows, saved."""
    p = run.plan
    log.info("scoring run %d with %s's official rule", run.run_id, p.spec.bench)
    metrics, official = _score(run.store, run.run_id, p.benchmark)
    metrics["peak_memory_mb"] = round(peak_memory_mb(run.device), 1)
    run.store.finish_run(run.run_id, status="finished", metrics=metrics, official=official,
                         peak_memory_mb=metrics["peak_memory_mb"])
    if official:
        save_score(run.store, run.run_id, p.spec.bench, official)
    return metrics, official


def execute(spec: RunSpec) -> RunReport:
    """plan → load → start → run_shard (all pending positions) → finalize, in one process."""
    return execute_plan(plan(spec))


def execute_plan(p: RunPlan) -> RunReport:
    """One process, or one of a launch's processes (see :mod:`harness.run.distributed`): rank 0 opens the
    run, every process computes its share, rank 0 scores the run once all shares are stored."""
    from harness.run.distributed import share, shard_positions, world
    from harness.run.store import Store

    spec = p.spec
    w = world()
    store = Store(spec.db)  # a bad --db fails now, not after minutes of loading a model
    if w.size > 1:
        spec.device = w.device(spec.device)
    backbone = load_plan(p)
    run = start(p, store, backbone) if w.main else None
    ours = set(shard_positions(p.positions, spec.shard))
    run_id, pending = w.broadcast((run.run_id, [q for q in run.pending if q in ours]) if w.main else None)
    if run is None:  # not rank 0: writes rows into rank 0's run, owns nothing
        run = OpenRun(plan=p, store=store, backbone=backbone, run_id=run_id, resumed=True, pending=pending,
                      device=backbone.describe()["device"])
    mine = share(pending, w)
    n_new = 0
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    where = f" (process {w.rank} of {w.size})" if w.size > 1 else ""
    alone = w.size == 1  # then the bar counts this invocation's positions, those already stored included
    bar = tqdm(total=len(ours) if alone else len(mine), initial=len(ours) - len(pending) if alone else 0,
               disable=not spec.progress or not w.main, desc=f"{spec.method} on {spec.bench}{where}", unit="sample",
               file=sys.stderr)

    def advance(n: int) -> None:
        nonlocal n_new
        n_new += n
        bar.update(n)

    try:
        with logging_redirect_tqdm():  # warnings get their own line, not glued to the bar
            run_shard(run, mine, on_rows=advance)
        bar.close()
        w.barrier()  # every share stored (a process that died never arrives: the launcher stops the rest)
        n_new = len(pending) if w.size > 1 else n_new  # counted over every process
        if not w.main:
            return RunReport(run_id=run_id, db_url=store.url, resumed=run.resumed, n_new=n_new, metrics={},
                             official={})
        stored = len(store.samples(run.run_id)) if spec.shard is not None else len(p.positions)
        if stored < len(p.positions):  # only a shard can end short: the others' rows are elsewhere
            index, count = spec.shard
            store.finish_run(run.run_id, status="partial", metrics=None, official=None,
                             peak_memory_mb=round(peak_memory_mb(run.device), 1),
                             error=f"shard {index}/{count} stored: {stored} of {len(p.positions)} rows; the others' "
                                   "databases complete it (harness merge), or run without --shard to finish here")
            return RunReport(run_id=run.run_id, db_url=store.url, resumed=run.resumed, n_new=n_new,
                             metrics={"n": stored, "n_planned": len(p.positions), "status": "partial"}, official={})
        metrics, official = finalize(run)
    except KeyboardInterrupt as exc:
        bar.close()
        if w.main:
            how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted by user"
            store.finish_run(run.run_id, status="interrupted", metrics=None, official=None,
                             error=f"{how} after {n_new} new samples{where}; re-run the same command to resume")
        raise
    except Exception as exc:
        if w.main:
            store.finish_run(run.run_id, status="failed", metrics=None, official=None,
                             error="".join(traceback.format_exception_only(type(exc), exc)).strip())
        raise
    judged = _judge_finished_run(store, run.run_id, p.benchmark, spec) if spec.judge is not None else None
    return RunReport(run_id=run.run_id, db_url=store.url, resumed=run.resumed, n_new=n_new, metrics=metrics,
                     official=official, judged=judged)


def _judge_finished_run(store, run_id: int, benchmark, spec: RunSpec) -> dict | None:
    """The judge's score row, added after the run is finished and stored: a judge failing here loses no
    prediction, and the run can be judged later with ``harness rescore``."""
    from harness.run.judge import JudgeError

    try:
        judged = score_stored(store, run_id, benchmark, judge=spec.judge)
    except Exception as exc:
        raise JudgeError(f"run {run_id} is finished and stored, but judging it failed "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); judge it later "
                         f"with `harness rescore {run_id} --judge-url URL --judge-model MODEL`") from exc
    if not judged:
        return None
    if not uses_judge(judged):
        log.warning("benchmark %s is scored by its own rule, not by an LLM judge; --judge-url was not used",
                    spec.bench)
        return None
    save_score(store, run_id, spec.bench, judged)
    return judged


def _uid_at(benchmark, position: int) -> str:
    try:
        return benchmark.sample(position).uid
    except DataError:
        return f"#{position}"  # a row too broken to read its id: stored as an error under its position


def _run_batch(method, backbone, benchmark, positions: list[int],
               max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> list[dict]:
    """Answer one batch; samples whose row or image cannot be read become error rows."""
    rows, ready = [], []
    for position in positions:
        sample = None
        try:
            sample = benchmark.sample(position)
            images = sample.images(max_pixels)
        except (DataError, BadImage) as exc:
            rows.append(_error_row(position, sample, exc))
            continue
        query = Query(images=images, question=benchmark.format_question(sample), choices=sample.choices,
                      stem=sample.question)
        ready.append((position, sample, query))
    if ready:
        outputs = method(backbone, [query for _, _, query in ready])
        for (position, sample, query), output in zip(ready, outputs):
            judgement = benchmark.grade(sample, output.answer)
            rows.append({
                "uid": sample.uid, "position": position, "category": sample.category, "prompt": query.question,
                "prediction": output.text, "answer": output.answer, "extracted": judgement.extracted,
                "gold": sample.gold, "correct": judgement.correct, "input_tokens": output.input_tokens,
                "generated_tokens": output.generated_tokens, "latent_steps": output.latent_steps,
                "latency_s": output.seconds, "extra": output.extra,
            })
    return rows


def _error_row(position: int, sample: Sample | None, exc: Exception) -> dict:
    log.warning("sample at position %d stored as an error: %s", position, exc)
    return {"uid": sample.uid if sample else f"#{position}", "position": position,
            "category": sample.category if sample else "", "gold": sample.gold if sample else "",
            "correct": False, "error": f"{type(exc).__name__}: {exc}"}


def _score(store, run_id: int, benchmark) -> tuple[dict, dict]:
    """Run metrics from the stored rows, and the benchmark's official metrics over the same rows."""
    from harness.run.metrics import summarize

    rows = store.samples(run_id)
    return summarize(rows), score_rows(rows, benchmark)


def score_rows(rows: list[dict], benchmark, judge: JudgeConfig | None = None) -> dict:
    """``benchmark.score`` over stored sample rows (their final answers), with ``judge`` if given."""
    scored, answers = [], []
    for row in rows:
        try:
            scored.append(benchmark.sample(row["position"]))
        except DataError:
            continue  # unreadable rows are counted as errors in the metrics, not by the official scorer
        answers.append("" if row.get("error") else row.get("answer") or "")
    return benchmark.score(scored, answers, judge=judge) if scored else {}


def reference_rows(rows: list[dict], benchmark) -> list[dict]:
    """``benchmark.reference_scores`` over stored rows (their full generated texts)."""
    scored, texts = [], []
    for row in rows:
        try:
            scored.append(benchmark.sample(row["position"]))
        except DataError:
            continue
        texts.append("" if row.get("error") else row.get("prediction") or "")
    return benchmark.reference_scores(scored, texts) if scored else []


def uses_judge(result: dict) -> bool:
    return result.get("scoring") == "judge"


def score_stored(store, run_id: int, benchmark, judge: JudgeConfig | None = None) -> dict:
    """Score a run's stored predictions (read only: samples are never changed)."""
    return score_rows(store.samples(run_id), benchmark, judge=judge)


def save_score(store, run_id: int, bench: str, result: dict) -> int:
    """One score row; its kind is the scorer's own label ("official" / "judge" / "rule-based")."""
    return store.add_score(run_id, kind=result.get("scoring", "official"),
                           scorer=result.get("scorer", f"{bench}:{result.get('scoring', 'official')}"),
                           accuracy=(result.get("overall") or {}).get("accuracy"), details=result)


def report_dict(report: RunReport) -> dict:
    return asdict(report)
