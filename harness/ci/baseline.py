"""Golden baselines: ``baselines/<case>.jsonl`` (one line per sample) and ``baselines/<case>.json``
(the summary: metrics, the platform they were made on, the case definition they belong to).

Plain JSON, read with ``json.loads`` only: a baseline from a pull request is data, never code.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# What is kept per sample: enough to tell any change in an answer, its grading or its cost.
SAMPLE_KEYS = ("uid", "prediction", "extracted", "correct", "error", "generated_tokens", "latent_steps")
METRIC_KEYS = ("n", "n_errors", "accuracy", "accuracy_se", "mean_generated_tokens", "mean_latent_steps",
               "samples_per_second")
FORMAT = 1


class BaselineError(ValueError):
    """A baseline that is missing, malformed, or made for another definition of its case (exit 2)."""


def paths(folder: Path, case: str) -> tuple[Path, Path]:
    return folder / f"{case}.jsonl", folder / f"{case}.json"


def sample_record(row: dict) -> dict:
    return {k: row.get(k) for k in SAMPLE_KEYS}


def load(folder: Path, case) -> tuple[list[dict], dict]:
    """The case's golden samples and summary; :class:`BaselineError` names what is wrong and the fix."""
    rows_path, summary_path = paths(folder, case.name)
    fix = f"run `harness ci --update {case.name}` to write it"
    if not rows_path.is_file() or not summary_path.is_file():
        raise BaselineError(f"case {case.name}: no baseline ({rows_path.name} and {summary_path.name} in {folder}); {fix}")
    try:
        summary = json.loads(summary_path.read_text())
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"case {case.name}: baseline is not valid JSON ({exc}); {fix}") from None
    if not isinstance(summary, dict) or summary.get("format") != FORMAT or not isinstance(summary.get("metrics"), dict):
        raise BaselineError(f"case {case.name}: {summary_path.name} is not a format-{FORMAT} baseline summary; {fix}")
    bad = [i for i, r in enumerate(rows, 1) if not isinstance(r, dict) or set(r) != set(SAMPLE_KEYS)
           or not isinstance(r.get("uid"), str)]
    if bad or not rows:
        where = f"line {bad[0]}" if bad else "no lines"
        raise BaselineError(f"case {case.name}: {rows_path.name} is malformed ({where}: each line needs exactly "
                            f"{', '.join(SAMPLE_KEYS)}); {fix}")
    if len({r["uid"] for r in rows}) != len(rows):
        raise BaselineError(f"case {case.name}: {rows_path.name} repeats a uid; {fix}")
    if summary.get("definition_sha") != case.definition_sha():
        raise BaselineError(f"case {case.name}: its definition in the suite changed since the baseline was written "
                            f"(baseline {summary.get('definition_sha')}, suite {case.definition_sha()}); {fix}")
    if summary["metrics"].get("n") != len(rows):
        raise BaselineError(f"case {case.name}: the summary says n = {summary['metrics'].get('n')} but "
                            f"{rows_path.name} has {len(rows)} lines; {fix}")
    return rows, summary


def write(folder: Path, case, rows: list[dict], metrics: dict, platform: dict, run: dict) -> None:
    """Both files, each replaced atomically (a killed ``--update`` leaves the old or the new one)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows_path, summary_path = paths(folder, case.name)
    summary = {"format": FORMAT, "case": case.name, "definition": case.definition(),
               "definition_sha": case.definition_sha(), "metrics": {k: metrics.get(k) for k in METRIC_KEYS},
               "platform": platform, "run": run}
    body = "".join(json.dumps(sample_record(r), sort_keys=True, ensure_ascii=False) + "\n"
                   for r in sorted(rows, key=lambda r: r["uid"]))
    for path, text in ((rows_path, body), (summary_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=folder)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
