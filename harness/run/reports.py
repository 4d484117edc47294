"""Text reports and exports behind the CLI's `runs`, `show` and `export` commands."""
from __future__ import annotations

import csv
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from harness.run.store import STALE, SampleRow, Store, stale_after_s

_SAMPLE_COLUMNS = ["run_id", "method", "model", "benchmark"] + [
    c.name for c in SampleRow.__table__.columns if c.name != "run_id"]


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
    table = _table(["id", "status", "method", "model", "benchmark", "n", "acc % ± se",
                    "gen tok", "tok correct", "samples/s", "started"], rows)
    if any(r["status"] == STALE for r in runs):
        table += (f"\n\nstale: stored as running, but its process is gone (killed, crashed, or on another host "
                  f"with no heartbeat for {stale_after_s() / 60:g} min); re-run the same command to resume it")
    return table


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
        "updated_at", "finished_at", "peak_memory_mb", "n_samples", "owner_host", "owner_pid", "heartbeat_at"]


def format_run(run: dict[str, Any], scores: list[dict[str, Any]] | None = None) -> str:
    out = [f"run {run['id']}  [{run['status']}]"]
    if run.get("stale_reason"):
        out.append(f"  stale: {run['stale_reason']}; re-run the same command to resume it")
    out.append("config:")
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


def _run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**{k: v for k, v in r.items() if k not in ("metrics", "official")},
             **_flatten("metrics", r.get("metrics")), **_flatten("official", r.get("official"))}
            for r in runs]


def _sample_rows(store: Store, runs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
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


def output_path(out: str | os.PathLike | None) -> Path | None:
    """Where an export goes: None (standard output) for no --out or ``-``; a file otherwise. An
    existing folder is an error (ValueError, one line) before anything is read or written."""
    if out is None or str(out) == "-":
        return None
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name (e.g. {path / 'export.csv'})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out}: {parent} is a file, not a folder")
            break
    return path


@contextmanager
def open_output(out: str | os.PathLike | None) -> Iterator[IO[str]]:
    """A text stream for an export: standard output (out None or ``-``), or a temporary file beside
    ``out`` that replaces it only when everything was written, so a failure leaves no partial file."""
    path = output_path(out)
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def export(store: Store, out_path: str | os.PathLike | None, *, fmt: str = "csv", what: str = "runs",
           run_ids: list[int] | None = None) -> int:
    """Write runs or samples as CSV or JSON lines; returns the number of rows written.

    ``out_path`` None or ``"-"``: standard output. A file is written to a temporary name beside it and
    renamed, so a failure leaves no partial file; an existing folder is refused (ValueError).
    """
    if fmt not in ("csv", "jsonl") or what not in ("runs", "samples"):
        raise ValueError(f"fmt must be csv|jsonl and what runs|samples, not {fmt!r}/{what!r}")
    path = output_path(out_path)  # a folder fails here, before the database is read
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    runs = store.runs() if run_ids is None else [store.run(i) for i in run_ids]  # a bad id: nothing written
    if what == "runs":
        rows: Iterable[dict[str, Any]] = _run_rows(runs)
        columns = list(dict.fromkeys(k for r in rows for k in r))  # union, first-seen order
    else:
        rows, columns = _sample_rows(store, runs), _SAMPLE_COLUMNS

    with open_output(out_path) as f:
        if fmt == "csv":
            return _write_csv(f, rows, columns)
        n = 0
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        return n
