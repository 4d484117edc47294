"""Text reports and exports behind the CLI's `runs`, `show` and `export` commands."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.store import Sample, Store

_SAMPLE_COLUMNS = ["run_id", "method", "model", "benchmark"] + [
    c.name for c in Sample.__table__.columns if c.name != "run_id"]


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _when(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def _basename(model: str | None) -> str:
    return (model or "").rstrip("/").rsplit("/", 1)[-1]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [header, *rows])


def format_runs(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "no runs"
    rows = []
    for r in runs:
        m = r.get("metrics") or {}
        if "n" in m:
            n = str(m["n"])
        else:  # unfinished: progress so far
            n = f"{r.get('n_samples', '?')}/{r.get('n_planned') or '?'}"
        acc = "-" if m.get("accuracy") is None else \
            f"{m['accuracy']:.2f} ± {_fmt(m.get('accuracy_se'))}"
        rows.append([str(r["id"]), r["status"], r["method"], _basename(r["model"]), r["benchmark"],
                     n, acc, _fmt(m.get("mean_generated_tokens"), ".1f"),
                     _fmt(m.get("mean_generated_tokens_correct"), ".1f"),
                     _fmt(m.get("samples_per_second")), _when(r.get("started_at"))])
    return _table(["id", "status", "method", "model", "benchmark", "n", "acc % ± se",
                   "gen tok", "tok correct", "samples/s", "started"], rows)


def _lines(d: dict[str, Any], indent: int = 2) -> list[str]:
    """key: value lines; nested dicts become indented blocks."""
    pad = " " * indent
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.append(f"{pad}{k}:")
            out.extend(_lines(v, indent + 2))
        else:
            out.append(f"{pad}{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    return out


_CONFIG = ["key", "method", "method_config", "model", "model_revision", "backbone_family",
           "benchmark", "split", "subset", "data_fingerprint", "n_planned", "seed",
           "batch_size", "dtype"]
_ENV = ["harness_version", "git_commit", "device", "library_versions", "started_at",
        "updated_at", "finished_at", "peak_memory_mb", "n_samples"]


def format_run(run: dict[str, Any], scores: list[dict[str, Any]] | None = None) -> str:
    out = [f"run {run['id']}  [{run['status']}]", "config:"]
    out += _lines({k: run.get(k) for k in _CONFIG})
    out += ["environment:"] + _lines({k: run.get(k) for k in _ENV})
    metrics = dict(run.get("metrics") or {})
    by_cat = metrics.pop("by_category", None)
    out += ["metrics:"] + (_lines(metrics) if metrics else ["  (none yet)"])
    if by_cat:
        out += ["per category:", _table(
            ["  category", "n", "correct", "acc %"],
            [[f"  {k or '-'}", str(c["n"]), str(c["correct"]), _fmt(c["accuracy"])]
             for k, c in by_cat.items()])]
    if run.get("official"):
        out += ["official:"] + _lines(run["official"])
    if scores:  # each scoring kind on its own line: official, judge and rule-based are different metrics
        out += ["scores:", _table(["  kind", "scorer", "acc %", "scored at"],
                                  [[f"  {x['kind']}", x["scorer"], _fmt(x["accuracy"]), str(x["created_at"])]
                                   for x in scores])]
    if run.get("error"):
        out += ["error:", "  " + str(run["error"]).replace("\n", "\n  ")]
    return "\n".join(out)


def _flatten(prefix: str, d: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(f"{prefix}.{k}", v))
        else:
            out[f"{prefix}.{k}"] = v
    return out


def _run_rows(store: Store, run_ids: list[int] | None) -> list[dict[str, Any]]:
    runs = store.runs() if run_ids is None else [store.run(i) for i in run_ids]
    return [{**{k: v for k, v in r.items() if k not in ("metrics", "official")},
             **_flatten("metrics", r.get("metrics")), **_flatten("official", r.get("official"))}
            for r in runs]


def _sample_rows(store: Store, run_ids: list[int] | None) -> Iterator[dict[str, Any]]:
    runs = store.runs() if run_ids is None else [store.run(i) for i in run_ids]
    for r in runs:
        head = {"run_id": r["id"], "method": r["method"], "model": r["model"],
                "benchmark": r["benchmark"]}
        for s in store.iter_samples(r["id"]):
            yield {**head, **s}


def _write_csv(f, rows: Iterable[dict[str, Any]], columns: list[str]) -> int:
    w = csv.DictWriter(f, fieldnames=columns)
    w.writeheader()
    n = 0
    for row in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})
        n += 1
    return n


def export(store: Store, out_path: str | os.PathLike, *, fmt: str = "csv", what: str = "runs",
           run_ids: list[int] | None = None) -> int:
    """Write runs or samples as CSV or JSON lines; returns the number of rows written.

    Writes to a temporary file beside out_path and renames it, so a failure leaves no partial file.
    """
    if fmt not in ("csv", "jsonl") or what not in ("runs", "samples"):
        raise ValueError(f"fmt must be csv|jsonl and what runs|samples, not {fmt!r}/{what!r}")
    if what == "runs":
        rows: Iterable[dict[str, Any]] = _run_rows(store, run_ids)
        columns = list(dict.fromkeys(k for r in rows for k in r))  # union, first-seen order
    else:
        rows, columns = _sample_rows(store, run_ids), _SAMPLE_COLUMNS

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            if fmt == "csv":
                n = _write_csv(f, rows, columns)
            else:
                n = 0
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    n += 1
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n
