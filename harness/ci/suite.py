"""The regression suite: a TOML file of named cases (``results/ci/suite.toml`` by default).

```toml
[defaults]              # every key of a case may be set here
threads = 2             # torch threads: part of the platform, so fixed (a different count may round differently)
band = 2.0              # statistical check: the accuracy drop (points) that may fail ...
alpha = 0.05            # ... when McNemar's exact test on the paired flips is significant at alpha
tokens_band = 0.10      # mean generated tokens (and latent steps) may grow by this fraction
speed_band = 0.30       # samples/s, relative to the reference case, may fall by this fraction
speed = "warn"          # "warn" or "fail": what a slower case is
speed_reference = "direct-easyvqa"   # the case speed is normalised by (machines differ)

[[case]]
name = "ivt-lr-easyvqa"  # also the baseline's file name: results/ci/baselines/ivt-lr-easyvqa.jsonl
method = "ivt-lr"
bench = "easyvqa"
model = "zoo:easyvqa-qwen2vl"
split = "test"
limit = 48               # a seeded subset (seed = 0 unless given); or subset = "uids.txt" (one uid per line)
options = { checkpoint = "../zoo/easyvqa-qwen2vl-ivt-lr", max_new_tokens = 64 }
check = "auto"           # "exact" when the platform matches the baseline's, else "statistical"; or force one
```

Relative paths (``model``, ``data``, ``subset`` and option values that start with ``./`` or ``../``) are read
from the suite file's folder, so the suite works from any working directory. ``fixture = N`` runs on
the benchmark's fixture (N made-up samples, written once under the suite's ``data/`` folder).
"""
from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_SUITE = "results/ci/suite.toml"
CHECK_MODES = ("auto", "exact", "statistical")
SPEED_MODES = ("warn", "fail")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SuiteError(ValueError):
    """A suite file that cannot be used (exit 2): the message names the file, the case and the fix."""


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    bench: str
    model: str
    split: str | None = None
    data: str | None = None
    fixture: int | None = None
    limit: int | None = None
    seed: int = 0
    subset: str | None = None
    options: dict = field(default_factory=dict)
    batch_size: int = 16
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 2
    check: str = "auto"
    band: float = 2.0
    alpha: float = 0.05
    tokens_band: float = 0.10
    speed_band: float = 0.30
    speed: str = "warn"
    speed_reference: str | None = None
    raw: dict = field(default_factory=dict)  # data, subset and options as the suite file wrote them

    def definition(self) -> dict:
        """What determines the case's answers; a baseline is valid only for the definition it was made
        with (thresholds and the speed settings are not part of it)."""
        keys = ("method", "bench", "split", "fixture", "limit", "seed", "device", "dtype")
        out = {k: getattr(self, k) for k in keys}
        # Paths as the suite wrote them (not resolved): the same suite in another checkout, the same case.
        out.update({k: self.raw.get(k) for k in ("model", "data", "subset")}, options=self.raw.get("options", {}))
        return out

    def definition_sha(self) -> str:
        return hashlib.sha256(json.dumps(self.definition(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("raw", None)
        return out


@dataclass(frozen=True)
class Suite:
    path: Path
    cases: list[Case]

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def baselines(self) -> Path:
        return self.folder / "baselines"

    def case(self, name: str) -> Case:
        for case in self.cases:
            if case.name == name:
                return case
        raise SuiteError(f"{self.path}: no case named {name!r}; cases: {', '.join(c.name for c in self.cases)}")


_FIELDS = {name for name in Case.__dataclass_fields__ if name != "raw"}
_TYPES = {"name": str, "method": str, "bench": str, "model": str, "split": str, "data": str, "subset": str,
          "fixture": int, "limit": int, "seed": int, "options": dict, "batch_size": int, "device": str,
          "dtype": str, "threads": int, "check": str, "band": (int, float), "alpha": (int, float),
          "tokens_band": (int, float), "speed_band": (int, float), "speed": str, "speed_reference": str}


def _resolve(folder: Path, value):
    if isinstance(value, str) and value.startswith(("./", "../")):
        return str((folder / value).resolve())
    return value


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; every problem is a :class:`SuiteError` naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"suite file {path} does not exist; pass --suite FILE (the default is {DEFAULT_SUITE})")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path} is not valid TOML ({exc}); fix the file") from None
    unknown_top = set(raw) - {"defaults", "case"}
    if unknown_top:
        raise SuiteError(f"{path}: unknown table(s) {', '.join(sorted(unknown_top))}; a suite has [defaults] and [[case]]")
    defaults = raw.get("defaults", {})
    entries = raw.get("case", [])
    if not isinstance(defaults, dict) or not isinstance(entries, list) or not entries:
        raise SuiteError(f"{path}: no [[case]] entries; a suite needs at least one")
    folder = path.parent.resolve()
    cases, seen = [], set()
    for number, entry in enumerate(entries, 1):
        merged = {**defaults, **entry}
        label = f"{path}: case {entry.get('name', f'#{number}')!r}"
        unknown = set(merged) - _FIELDS
        if unknown:
            raise SuiteError(f"{label}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_FIELDS))}")
        for key in ("name", "method", "bench", "model"):
            if key not in merged:
                raise SuiteError(f"{label}: missing {key!r}")
        for key, value in merged.items():
            kind = _TYPES[key]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise SuiteError(f"{label}: {key} = {value!r} should be {getattr(kind, '__name__', 'a number')}")
        if not _NAME.match(merged["name"]):
            raise SuiteError(f"{label}: a case name is letters, digits, '.', '_' and '-' (it names its baseline file)")
        if merged["name"] in seen:
            raise SuiteError(f"{label}: the name is used twice; case names must be unique")
        seen.add(merged["name"])
        if merged.get("check", "auto") not in CHECK_MODES:
            raise SuiteError(f"{label}: check = {merged['check']!r}; choose from {', '.join(CHECK_MODES)}")
        if merged.get("speed", "warn") not in SPEED_MODES:
            raise SuiteError(f"{label}: speed = {merged['speed']!r}; choose from {', '.join(SPEED_MODES)}")
        if sum(k in merged for k in ("data", "fixture")) > 1:
            raise SuiteError(f"{label}: give data or fixture, not both")
        if "subset" in merged and "limit" in merged:
            raise SuiteError(f"{label}: give limit (+ seed) or subset, not both")
        for key in ("limit", "fixture", "batch_size", "threads"):
            if key in merged and merged[key] < 1:
                raise SuiteError(f"{label}: {key} must be at least 1")
        if not 0 < merged.get("alpha", 0.05) < 1:
            raise SuiteError(f"{label}: alpha must lie between 0 and 1")
        raw = {k: merged[k] for k in ("model", "data", "subset", "options") if k in merged}
        merged["model"] = _resolve(folder, merged["model"])
        merged["options"] = {k: _resolve(folder, v) for k, v in merged.get("options", {}).items()}
        for key in ("data", "subset"):
            if key in merged:
                merged[key] = str((folder / merged[key]).resolve())
        cases.append(Case(**merged, raw=raw))
    names = {c.name for c in cases}
    for case in cases:
        if case.speed_reference is not None and case.speed_reference not in names:
            raise SuiteError(f"{path}: speed_reference {case.speed_reference!r} (case {case.name!r}) is not a case")
    return Suite(path=path.resolve(), cases=cases)


def read_subset(path: str) -> list[str]:
    """A subset file: one sample uid per line (``#`` comments and blank lines skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise SuiteError(f"subset file {path} cannot be read ({exc.strerror}); fix the case's subset") from None
    uids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not uids:
        raise SuiteError(f"subset file {path} lists no uids; write one sample uid per line")
    return uids
