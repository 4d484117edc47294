"""Running one case through the normal runner (plan → load → start → shards → finalize) into a database.

A re-run resumes, and a second ``harness ci`` reuses the stored answers, but only while nothing that
could change them changed: a run's identity covers the method's options, the model's weights and the
data, not the harness's own code, so the ledger beside the suite (``ledger.json``) keeps, per database
and case, a fingerprint of the code (the ``harness/`` sources and every registered method's package),
the library versions, the thread count and any file an option points at. A different fingerprint
starts the case afresh (``fresh``); the same one resumes or reuses.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import platform as _platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.api.hashing import digest_files

log = logging.getLogger("harness")


@dataclass
class CaseRun:
    rows: list[dict]
    metrics: dict
    platform: dict
    run: dict  # run_id, db, reused (answers from an earlier invocation), computed (samples computed now)

    @property
    def measured_now(self) -> bool:
        """All samples computed in this invocation: its samples/s is comparable with the reference's."""
        return self.run["computed"] == len(self.rows)


def _tree(folder: Path, suffixes: tuple[str, ...] | None = None, *, sampled: bool = False) -> str:
    files = [path for path in sorted(folder.rglob("*")) if path.is_file() and "__pycache__" not in path.parts
             and (suffixes is None or path.suffix in suffixes)]
    return digest_files(files, sampled=sampled).hexdigest()


@functools.lru_cache(maxsize=None)
def _code(folders: tuple[Path, ...]) -> str:
    """One hash of these source trees (once per invocation: the cases share it)."""
    return hashlib.sha256("".join(_tree(f, (".py", ".jinja", ".json", ".toml")) for f in folders).encode()).hexdigest()


def fingerprint(case, versions: dict) -> str:
    """What the stored answers of ``case`` depend on beyond the run's identity (see the module docstring):
    the harness's sources and those of every package a registered method comes from (``methods/`` and
    any plugin's), found through the registry, not imported by name; files an option points at are
    hashed as model folders are (``digest_files``, sampled)."""
    import harness
    from harness.api import METHODS

    packages = {Path(harness.__file__).parent}
    for _, cls in METHODS.items():
        top = sys.modules[cls.__module__.split(".")[0]]
        packages.add(Path(top.__file__).parent if getattr(top, "__file__", None) else Path(inspect.getfile(cls)).parent)
    files = {}
    for key, value in sorted(case.options.items()):
        path = Path(value) if isinstance(value, str) else None
        if path is not None and path.is_absolute() and path.exists():
            files[key] = _tree(path, sampled=True) if path.is_dir() else digest_files([path], sampled=True).hexdigest()
    state = {"code": _code(tuple(sorted(packages))), "files": files, "versions": versions, "threads": case.threads}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


class Ledger:
    """``{db url: {case: fingerprint}}`` in a JSON file, replaced atomically."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text()) if path.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.data = {}  # only a cache: a broken one means "compute afresh"
        if not isinstance(self.data, dict):
            self.data = {}

    def get(self, db: str, case: str) -> str | None:
        return self.data.get(db, {}).get(case)

    def set(self, db: str, case: str, value: str) -> None:
        self.data.setdefault(db, {})[case] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(self.data, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)


def cpu_model() -> str:
    """The processor's model name: another CPU may take other vector paths and round differently."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or _platform.machine()


def platform_of(run: dict, case) -> dict:
    """What the exact check requires to be equal: device, dtype, thread count, library versions, CPU."""
    versions = run.get("library_versions") or {}
    return {"device": run.get("device"), "dtype": run.get("dtype"), "threads": case.threads,
            "torch": versions.get("torch"), "transformers": versions.get("transformers"),
            "python": versions.get("python"), "machine": _platform.machine(), "cpu": cpu_model()}


def fixture_data(case, folder: Path) -> str:
    """The benchmark's fixture (``case.fixture`` samples, seed 0), written under the suite's data/ folder."""
    from harness.testing.fixtures import write_all

    written = write_all(folder / "data" / f"n{case.fixture}", n=case.fixture, seed=0, benches=[case.bench])
    return str(written[case.bench])


def run_case(case, suite, db: str, ledger: Ledger) -> CaseRun:
    import torch

    from harness.ci.suite import SuiteError, read_subset
    from harness.run.plan import environment, plan
    from harness.run.runner import RunSpec, _uid_at, execute_plan
    from harness.run.store import Store

    torch.set_num_threads(case.threads)
    data = fixture_data(case, suite.folder) if case.fixture else case.data
    print_ = fingerprint(case, environment()["library_versions"])
    fresh = ledger.get(db, case.name) != print_
    spec = RunSpec(method=case.method, bench=case.bench, model=case.model, method_options=dict(case.options),
                   data=data, split=case.split, limit=case.limit, seed=case.seed, batch_size=case.batch_size,
                   device=case.device, dtype=case.dtype, db=db, fresh=fresh, progress=False)
    p = plan(spec)
    if case.subset:
        wanted = read_subset(case.subset)
        at = {_uid_at(p.benchmark, q): q for q in range(p.total)}
        missing = [u for u in wanted if u not in at]
        if missing:
            raise SuiteError(f"case {case.name}: subset uid(s) not in {case.bench}: {', '.join(missing[:5])}")
        p.positions = sorted(at[u] for u in set(wanted))
    ledger.set(db, case.name, print_)  # before running: an interrupted case resumes on the next invocation
    report = execute_plan(p)
    with Store(db, read_only=True) as store:
        run = store.run(report.run_id)
        rows = store.samples(report.run_id)
    reused = report.resumed and report.n_new == 0
    return CaseRun(rows=rows, metrics=report.metrics, platform=platform_of(run, case),
                   run={"run_id": report.run_id, "db": db, "reused": reused, "computed": report.n_new,
                        "fresh": fresh, "git_commit": run.get("git_commit")})
