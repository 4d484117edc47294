"""Planning a run: everything decided before a model loads, and the run's identity once it has.

``plan(spec)`` resolves the method (options checked), the benchmark (data read, so a ``DataError``
surfaces now), the positions to evaluate and the batch size, and checks ``--db`` and the judge:
every bad input fails here, in one line, before minutes of loading. ``load(plan)`` is the one
load → prepare → seed sequence (the runner and the VLMEvalKit adapter share it). ``RunPlan.identity``
is what names a stored run, so that the same command resumes it on any machine, with any number of
processes or any batch size.

May import: ``harness.api``, ``harness.backbones`` (inside functions), ``harness.run.store``/``judge``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness import __version__
from harness.api import BENCHMARKS, METHODS, DataError, coerce_options
from harness.api.types import DEFAULT_MAX_IMAGE_PIXELS
from harness.run.judge import JudgeConfig

if TYPE_CHECKING:
    from harness.api import Benchmark, Method
    from harness.backbones import Backbone

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
    # (I, N): this invocation computes the I-th of N fixed shares of the planned positions (one database
    # per node; ``harness merge`` unions them). Not part of the run's identity: every shard is the same run.
    shard: tuple[int, int] | None = None


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


def make_method(name: str, options: dict) -> "Method":
    """A registered method with its options; strings (as given on a command line) are coerced to the
    types its ``Options`` declare, typed values are taken as they are."""
    method_cls = METHODS.get(name)
    as_strings = {k: v for k, v in options.items() if isinstance(v, str)}
    return method_cls(**{**options, **coerce_options(method_cls, as_strings)})


@dataclass
class RunPlan:
    """A resolved :class:`RunSpec`: what will run, on which samples; no model loaded yet."""
    spec: RunSpec
    method: "Method"
    benchmark: "Benchmark"
    model: str  # the model's name as stored (a local folder resolved to its path)
    total: int  # samples in the benchmark's data
    positions: list[int]  # the ones this run evaluates, in data order
    batch_size: int

    def subset(self) -> dict:
        return {"limit": self.spec.limit, "seed": self.spec.seed, "n": len(self.positions), "of": self.total,
                "positions_sha": hashlib.sha256(json.dumps(self.positions).encode()).hexdigest()[:16],
                # Where the data was read from, so `harness rescore` can score the stored predictions later.
                "data": str(Path(self.spec.data).expanduser().resolve()) if self.spec.data else None}

    def fields(self, backbone: "Backbone") -> dict:
        """Everything stored with the run."""
        described = backbone.describe()
        return {
            "method": self.spec.method, "method_config": self.method.config(), "model": self.model,
            "model_revision": backbone.revision, "backbone_family": backbone.family, "benchmark": self.spec.bench,
            "split": self.benchmark.split, "subset": self.subset(), "data_fingerprint": self.benchmark.fingerprint(),
            "n_planned": len(self.positions), "device": described["device"], "dtype": described["dtype"],
            "seed": self.spec.seed, "batch_size": self.batch_size, **environment(),
        }

    def identity(self, backbone: "Backbone", fields: dict | None = None) -> dict:
        """What determines the outputs, and so names the run; device, batch size and versions do not."""
        fields = fields or self.fields(backbone)
        identity = {k: fields[k] for k in ("method_config", "model", "model_revision", "benchmark", "split",
                                           "subset", "data_fingerprint", "seed")}
        identity["subset"] = {k: v for k, v in fields["subset"].items() if k != "data"}  # same data elsewhere: same run
        identity["backbone"] = {k: v for k, v in backbone.describe().items()
                                if k not in ("model", "revision", "device")}
        return identity

    def key(self, backbone: "Backbone", fields: dict | None = None) -> str:
        return run_key(self.identity(backbone, fields))


def plan(spec: RunSpec) -> RunPlan:
    """Resolve and check a spec; nothing is loaded or written (see the module docstring)."""
    from harness.backbones import model_name
    from harness.run.store import check_url

    check_url(spec.db)  # a bad --db fails first, before the data or the model is read
    if spec.max_image_pixels is not None and spec.max_image_pixels < 1:
        raise ValueError(f"--max-image-pixels must be positive, got {spec.max_image_pixels}")
    model = model_name(spec.model)
    method = METHODS.get(spec.method)(**spec.method_options)  # typed options (the CLI coerced them)
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
    return RunPlan(spec=spec, method=method, benchmark=benchmark, model=model, total=total, positions=positions,
                   batch_size=batch_size)


def load(method: "Method", model: str, *, device: str = "auto", dtype: str = "auto", revision: str | None = None,
         backbone_options: dict | None = None, seed: int = 0) -> "Backbone":
    """The backbone a method runs on: loaded with the method's options, prepared by it, then seeded
    (the same sequence for ``harness run`` and the VLMEvalKit adapter, so both give the same answers)."""
    import torch

    from harness.backbones import load_backbone

    log.info("loading %s", model)
    backbone = load_backbone(model, device=device, dtype=dtype, revision=revision,
                             **{**method.backbone_options(), **(backbone_options or {})})
    method.prepare(backbone)
    random.seed(seed)
    torch.manual_seed(seed)
    return backbone


def load_plan(p: RunPlan) -> "Backbone":
    s = p.spec
    return load(p.method, p.model, device=s.device, dtype=s.dtype, revision=s.revision,
                backbone_options=s.backbone_options, seed=s.seed)
