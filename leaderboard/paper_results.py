"""Import the numbers papers report (a CSV of ``source,method,backbone,benchmark,metric,value,note``)
into the ``reported_results`` table. Re-importing the same file changes nothing; a changed value
replaces the stored one (the key is source, method, backbone, benchmark, metric)."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from sqlalchemy import select

from harness.run.store import ReportedResult, Store, utcnow

HEADER = ["source", "method", "backbone", "benchmark", "metric", "value", "note"]
KEY = ("source", "method", "backbone", "benchmark", "metric")


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a paper-results CSV, validated; one-line errors name the file, line and fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"paper results file {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in HEADER[:-1] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; the header must be "
                             f"{','.join(HEADER)} (note optional)")
        rows, seen = [], {}
        for line, rec in enumerate(reader, start=2):
            row = {k: (rec.get(k) or "").strip() for k in HEADER}
            empty = [k for k in KEY if not row[k]]
            if empty:
                raise ValueError(f"{path}:{line}: empty {', '.join(empty)}")
            try:
                value = float(row["value"])
            except ValueError:
                raise ValueError(f"{path}:{line}: value {row['value']!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{path}:{line}: value {row['value']!r} is not a finite number")
            key = tuple(row[k] for k in KEY)
            if key in seen:
                raise ValueError(f"{path}:{line}: same source, method, backbone, benchmark and metric as "
                                 f"line {seen[key]}; keep one")
            seen[key] = line
            rows.append({**row, "value": value})
    return rows


def import_csv(path: str | os.PathLike, db: str | None = None) -> dict[str, int]:
    """Store a CSV's rows in one transaction; returns counts of added, updated and unchanged rows."""
    rows = read_csv(path)
    store = Store(db)
    counts = {"added": 0, "updated": 0, "unchanged": 0}

    def tx(s) -> None:
        existing = {tuple(getattr(r, k) for k in KEY): r for r in s.scalars(select(ReportedResult))}
        now = utcnow()
        for row in rows:
            old = existing.get(tuple(row[k] for k in KEY))
            if old is None:
                s.add(ReportedResult(**row, imported_at=now))
                counts["added"] += 1
            elif old.value != row["value"] or (old.note or "") != row["note"]:
                old.value, old.note, old.imported_at = row["value"], row["note"], now
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1

    try:
        store._write(tx)  # the store's write path: BEGIN IMMEDIATE, retried while locked
    finally:
        store.close()
    return counts
