"""The runner: benchmark samples → method (with a backbone) → scored rows in the store.

Data flows one way: the CLI builds a :class:`RunSpec`, :func:`execute` resolves the method and the
benchmark (failing fast on bad names, options or data, before any model is loaded), loads the
backbone, then streams the benchmark in batches: images are decoded per batch, each batch is
answered, judged and written in one transaction. A run is identified by a key over everything that
determines its outputs, so re-running the same command resumes it; ``fresh`` starts over.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import resource
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import __version__
from harness.api import BENCHMARKS, BadImage, DataError, Query, Sample
from harness.api.types import DEFAULT_MAX_IMAGE_PIXELS
from harness.run.judge import JudgeConfig

log = logging.getLogger("harness")


@dataclass
class RunSpec:
    method: str
    bench: str
    model: str
    method_options: dict = field(default_factory=dict)
    data: str | None = None
    split: str | None = None
    limit: int | None = None
    seed: int = 0
    batch_size: int = 1
    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None
    backbone_options: dict = field(default_factory=dict)
    db: str | None = None
    fresh: bool = False
    progress: bool = True
    # Images over this many pixels become error samples before they are decoded (None: no limit).
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    # An LLM judge scores the run in addition to the benchmark's own scoring (a separate "judge" score
    # row); it does not change the predictions, so it is not part of the run's identity.
    judge: JudgeConfig | None = None


@dataclass
class RunReport:
    run_id: int
    db_url: str
    resumed: bool
    n_new: int
    metrics: dict
    official: dict
    judged: dict | None = None  # the judge's scoring, when RunSpec.judge was given


def select_positions(total: int, limit: int | None, seed: int) -> list[int]:
    """All positions, or a seeded random subset of ``limit`` of them kept in data order."""
    if limit is None or limit >= total:
        return list(range(total))
    if limit <= 0:
        raise ValueError(f"--limit must be positive, got {limit}")
    return sorted(random.Random(seed).sample(range(total), limit))


def run_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def environment() -> dict:
    """Library versions and the harness's git commit, stored with every run."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "accelerate", "datasets", "ms-vlmeval", "sqlalchemy", "peft"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"library_versions": versions, "git_commit": commit, "harness_version": __version__}


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm, Docker): handled like Ctrl-C, the run is marked interrupted."""


def execute(spec: RunSpec) -> RunReport:
    from harness.api import METHODS

    from harness.run.store import Store

    from harness.run.store import check_url

    check_url(spec.db)  # a bad --db fails first, before the data or the model is read
    if spec.max_image_pixels is not None and spec.max_image_pixels < 1:
        raise ValueError(f"--max-image-pixels must be positive, got {spec.max_image_pixels}")
    from harness.backbones import model_name

    model = model_name(spec.model)
    method = METHODS.get(spec.method)(**spec.method_options)
    benchmark = BENCHMARKS.get(spec.bench)(spec.data, spec.split)
    total = len(benchmark)  # loads the data: a DataError surfaces here, before the model loads
    if total == 0:
        raise DataError(f"benchmark {spec.bench} has no samples in {spec.data or 'its default location'}")
    positions = select_positions(total, spec.limit, spec.seed)
    if spec.judge is not None:
        spec.judge.check()  # a wrong URL, model or key fails now, not after the whole run
    if spec.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {spec.batch_size}")
    batch_size = spec.batch_size if method.supports_batching else 1
    if batch_size != spec.batch_size:
        log.warning("method %s does not batch; running with batch size 1", spec.method)

    store = Store(spec.db)  # a bad --db fails now, not after minutes of loading a model
    import torch

    from harness.backbones import load_backbone

    log.info("loading %s", model)
    backbone = load_backbone(model, device=spec.device, dtype=spec.dtype, revision=spec.revision,
                             **{**method.backbone_options(), **spec.backbone_options})
    method.prepare(backbone)
    described = backbone.describe()
    subset = {"limit": spec.limit, "seed": spec.seed, "n": len(positions), "of": total,
              "positions_sha": hashlib.sha256(json.dumps(positions).encode()).hexdigest()[:16],
              # Where the data was read from, so `harness rescore` can score the stored predictions later.
              "data": str(Path(spec.data).expanduser().resolve()) if spec.data else None}
    fields = {
        "method": spec.method, "method_config": method.config(), "model": model,
        "model_revision": backbone.revision, "backbone_family": backbone.family, "benchmark": spec.bench,
        "split": benchmark.split, "subset": subset, "data_fingerprint": benchmark.fingerprint(),
        "n_planned": len(positions), "device": described["device"], "dtype": described["dtype"],
        "seed": spec.seed, "batch_size": batch_size, **environment(),
    }
    # What determines the outputs, and so names the run; device, batch size and versions do not.
    identity = {k: fields[k] for k in ("method_config", "model", "model_revision", "benchmark", "split", "subset",
                                       "data_fingerprint", "seed")}
    identity["subset"] = {k: v for k, v in subset.items() if k != "data"}  # same data elsewhere: same run
    identity["backbone"] = {k: v for k, v in described.items() if k not in ("model", "revision", "device")}
    run_id, done, resumed = store.start_run(run_key(identity), fields, fresh=spec.fresh)
    # Only a resumed run needs each row's uid up front; a new one computes everything.
    pending = [p for p in positions if _uid_at(benchmark, p) not in done] if done else positions
    log.info("run %d (%s): %d of %d samples to compute", run_id, "resumed" if resumed else "new",
             len(pending), len(positions))

    random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    n_new = 0
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=len(positions), initial=len(positions) - len(pending), disable=not spec.progress,
               desc=f"{spec.method} on {spec.bench}", unit="sample", file=sys.stderr)
    try:
        with logging_redirect_tqdm():  # warnings get their own line, not glued to the bar
            for start in range(0, len(pending), batch_size):
                rows = _run_batch(method, backbone, benchmark, pending[start:start + batch_size],
                                  spec.max_image_pixels)
                store.add_samples(run_id, rows)
                n_new += len(rows)
                bar.update(len(rows))
        bar.close()
        log.info("scoring run %d with %s's official rule", run_id, spec.bench)
        metrics, official = _score(store, run_id, benchmark)
        metrics["peak_memory_mb"] = round(peak_memory_mb(described["device"]), 1)
        store.finish_run(run_id, status="finished", metrics=metrics, official=official,
                         peak_memory_mb=metrics["peak_memory_mb"])
        if official:
            save_score(store, run_id, spec.bench, official)
    except KeyboardInterrupt as exc:
        bar.close()
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted by user"
        store.finish_run(run_id, status="interrupted", metrics=None, official=None,
                         error=f"{how} after {n_new} new samples; re-run the same command to resume")
        raise
    except Exception as exc:
        store.finish_run(run_id, status="failed", metrics=None, official=None,
                         error="".join(traceback.format_exception_only(type(exc), exc)).strip())
        raise
    judged = _judge_finished_run(store, run_id, benchmark, spec) if spec.judge is not None else None
    return RunReport(run_id=run_id, db_url=store.url, resumed=resumed, n_new=n_new, metrics=metrics,
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
        query = Query(images=images, question=benchmark.format_question(sample), choices=sample.choices)
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
