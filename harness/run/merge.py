"""`harness merge`: union the runs and sample rows of several results databases into one.

Made for runs split across machines without a shared database (``harness run --shard I/N --db
sqlite:///nodeI.db``: each node stores its share in a run whose status is "partial"), and good for
gathering any runs in one file. Runs are matched by ``Run.key`` (the hash of everything that
determines their outputs) among runs that are not superseded:

* a key the target has no live run for: the run row is copied (a new id, every other field as
  stored) with its sample rows and its scores, and with the rows of the same key's runs in the
  other sources;
* a key the target has a run for: the sources' rows whose uid that run lacks are added to it.

A uid stored twice (by two sources, or by a source and the target) must be the same row in the
columns that the computation determines (``COMPARED``: not the latency nor the time written,
which differ between machines); an identical duplicate is skipped, a different one stops the
merge naming the run and the positions. Every check happens before anything is written, and the
whole merge is one transaction of the target: all of it is written, or nothing.

Then each run whose rows changed (or that is not finished yet) is settled: with every planned
position stored (``n_planned`` rows, as the plan's ``positions_sha`` says) it gets its metrics
(:func:`harness.run.metrics.summarize`) and, where the benchmark's data can be read here, its
official score exactly as the runner's ``finalize`` gives it (``score_rows``; the run's
``official`` and a score row), and the status "finished"; with positions missing it stays
"partial". Merging what is already merged changes nothing.

Kept free of torch: reading, comparing and writing rows is plain SQLAlchemy Core in bulk.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import delete, func, insert, inspect, select, update
from sqlalchemy.engine import make_url

from harness.run.store import (RUN_FIELDS, SAMPLE_FIELDS, Run, SampleRow, Score, Store, StoreError, check_url,
                               stale_reason, utcnow)

log = logging.getLogger("harness")

# What the computation determines: a row stored twice must agree in these. latency_s and created_at
# differ from machine to machine and are not compared.
COMPARED = ("uid", "position", "category", "prompt", "prediction", "answer", "extracted", "gold", "correct",
            "error", "input_tokens", "generated_tokens", "latent_steps", "extra")
_INSERT_CHUNK = 5000
_SHOWN_POSITIONS = 5


class MergeError(StoreError):
    """A merge that cannot be done, said in one line (the CLI prints it and exits 2); nothing was written."""


@dataclass
class MergedRun:
    """What the merge did to one run of the target."""
    run_id: int
    key: str
    method: str
    benchmark: str
    model: str
    action: str  # "copied" (new in the target), "merged" (rows added or settled), "unchanged"
    rows_added: int  # rows written to the target for this run
    rows: int  # rows the run holds now
    n_planned: int | None
    status: str
    sources: list[str] = field(default_factory=list)  # the databases that held this run
    official_accuracy: float | None = None
    not_scored: str | None = None  # complete, but the official score could not be computed here: why


@dataclass
class MergeReport:
    into: str
    sources: list[str]
    runs: list[MergedRun]
    superseded_skipped: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- reading ------------------------------------------------------------------------------------------


@dataclass
class _Part:
    """One stored run that takes part in a merge (a source's, or the target's own)."""
    where: str  # how messages name its database
    run: dict[str, Any]
    rows: dict[str, dict[str, Any]]  # uid → row (SAMPLE_FIELDS)
    scores: list[dict[str, Any]]


def _shown(arg: str) -> str:
    """A source or target as messages name it: as given, with any password hidden."""
    if "://" not in arg:
        return arg
    try:
        u = make_url(arg)
        return arg if u.password is None else u.render_as_string(hide_password=True)
    except Exception:
        return arg


def _relabel(exc: StoreError, arg: str, role: str) -> MergeError:
    """A Store's message names the database as "--db X" (or "results database 'X'"); here it is a
    source or the --into target."""
    msg = str(exc)
    if msg.startswith("--db "):
        msg = msg[len("--db "):]
    elif msg.startswith("results database "):
        msg = f"{_shown(arg)}: no such database file"
    return MergeError(f"{role} {msg}" if role == "--into" else f"source {msg}")


def _columns(conn, table) -> list:
    """The table's columns that this database has (one made by an older harness may lack some)."""
    have = {c["name"] for c in inspect(conn).get_columns(table.name)}
    return [c for c in table.columns if c.name in have]


def _read_parts(conn, where: str, runs: Iterable[dict[str, Any]]) -> list[_Part]:
    """Each run's rows and scores, read in bulk (one select per run over the (run_id) index). Every
    row carries every sample field (bulk inserts take one set of keys), as a new row would store it."""
    s_cols = [c for c in _columns(conn, SampleRow.__table__) if c.name in SAMPLE_FIELDS]
    names = [c.name for c in s_cols]
    missing = dict.fromkeys(sorted(SAMPLE_FIELDS - set(names)))  # an older database's: None
    has_scores = inspect(conn).has_table(Score.__tablename__)
    c_cols = _columns(conn, Score.__table__) if has_scores else []
    parts = []
    for run in runs:
        rows = {}
        for values in conn.execute(select(*s_cols).where(SampleRow.__table__.c.run_id == run["id"])).all():
            row = dict(zip(names, values))
            if missing:
                row.update(missing)
            if row["extra"] is None:
                row["extra"] = {}
            if row["created_at"] is None:
                row["created_at"] = utcnow()
            rows[row["uid"]] = row
        scores = []
        if has_scores:
            scores = [dict(r._mapping) for r in conn.execute(
                select(*c_cols).where(Score.__table__.c.run_id == run["id"]).order_by(Score.__table__.c.id))]
        parts.append(_Part(where=where, run=run, rows=rows, scores=scores))
    return parts


def _live_runs(conn, keys: set[str] | None = None) -> list[dict[str, Any]]:
    """The runs that are not superseded (all, or those with one of ``keys``), oldest first."""
    t = Run.__table__
    q = select(*_columns(conn, t)).where(t.c.status != "superseded")
    if keys is not None:
        if not keys:
            return []
        q = q.where(t.c.key.in_(sorted(keys)))
    return [{c.name: None for c in t.columns} | dict(r._mapping) for r in conn.execute(q.order_by(t.c.id))]


def read_source(arg: str) -> tuple[list[_Part], int]:
    """A source database's live runs with their rows and scores, and how many superseded runs it holds."""
    try:
        store = Store(arg, read_only=True)
    except StoreError as exc:
        raise _relabel(exc, arg, "source") from None
    try:
        with store.engine.connect() as conn:
            t = Run.__table__
            superseded = conn.execute(select(func.count()).select_from(t).where(t.c.status == "superseded")).scalar()
            parts = _read_parts(conn, _shown(arg), _live_runs(conn))
        return parts, int(superseded or 0)
    finally:
        store.close()


# -- checking ------------------------------------------------------------------------------------------


def _describe(run: dict[str, Any]) -> str:
    return f"run {run['key'][:12]}… ({run.get('method')} on {run.get('benchmark')}, {run.get('model')})"


_values = itemgetter(*COMPARED)  # a row's compared values (rows read here carry every field)


def _positions(found: list[int]) -> str:
    shown = ", ".join(str(p) for p in sorted(found)[:_SHOWN_POSITIONS])
    return shown + (f", … ({len(found)} in all)" if len(found) > _SHOWN_POSITIONS else "")


class _Union:
    """The rows of one key's runs, uid → (row, where it came from); differences are collected, not raised."""

    def __init__(self, run: dict[str, Any]):
        self.run = run
        self.rows: dict[str, dict[str, Any]] = {}
        self.origin: dict[str, str] = {}
        self.by_position: dict[int, str] = {}
        self.conflicts: dict[tuple[str, str], dict[int, set[str]]] = {}  # (where, where) → position → columns

    def _conflict(self, first: str, second: str, position: int, columns: Iterable[str]) -> None:
        self.conflicts.setdefault((first, second), {}).setdefault(position, set()).update(columns)

    def add(self, part: _Part) -> None:
        self._add(part.rows, lambda uid: part.where)

    def add_union(self, other: "_Union") -> None:
        self._add(other.rows, other.origin.__getitem__)

    def _add(self, rows: dict[str, dict[str, Any]], where) -> None:
        mine, origin, by_position = self.rows, self.origin, self.by_position
        for uid, row in rows.items():
            have = mine.get(uid)
            if have is not None:
                if have is not row and _values(have) != _values(row):
                    differ = [c for c in COMPARED if have.get(c) != row.get(c)]
                    self._conflict(origin[uid], where(uid), row["position"], differ)
                continue
            other = by_position.get(row["position"])
            if other is not None and other != uid:
                self._conflict(origin[other], where(uid), row["position"], ["uid"])
                continue
            mine[uid] = row
            origin[uid] = where(uid)
            by_position[row["position"]] = uid

    def error(self) -> str | None:
        if not self.conflicts:
            return None
        (first, second), found = next(iter(self.conflicts.items()))
        columns = sorted(set().union(*found.values()), key=COMPARED.index)
        what = "answers" if {"answer", "prediction", "correct"} & set(columns) else "rows"
        more = sum(len(f) for f in self.conflicts.values()) - len(found)
        also = f"; {more} more differences between other databases" if more else ""
        return (f"{_describe(self.run)} has different {what} at positions {_positions(list(found))} in {first} and "
                f"{second} ({', '.join(columns)} differ){also}; nothing was written")


def _check(unions: Iterable[_Union]) -> None:
    errors = [e for e in (u.error() for u in unions) if e]
    if errors:
        more = f" (and {len(errors) - 1} more runs differ)" if len(errors) > 1 else ""
        raise MergeError(errors[0].replace("; nothing was written", f"{more}; nothing was written", 1))


def _plan_check(run: dict[str, Any], rows: dict[str, dict[str, Any]]) -> bool:
    """Whether ``rows`` are every planned position of ``run``: n_planned rows (uids are unique), at the
    positions the plan's ``positions_sha`` names where it was stored. More rows than planned, or the
    planned number at other positions, is an error: those rows belong to no plan of this key."""
    n = run.get("n_planned")
    if n is None:
        return False
    if len(rows) > n:
        raise MergeError(f"{_describe(run)} has {len(rows)} rows in all but {n} were planned; nothing was written")
    if len(rows) < n:
        return False
    sha = (run.get("subset") or {}).get("positions_sha")
    if sha:
        positions = sorted(r["position"] for r in rows.values())
        if hashlib.sha256(json.dumps(positions).encode()).hexdigest()[:16] != sha:
            raise MergeError(f"{_describe(run)} has its {n} planned rows at positions other than its plan's "
                             f"(positions_sha {sha}); nothing was written")
    return True


# -- scoring -------------------------------------------------------------------------------------------


class _Benchmarks:
    """Benchmarks built from stored runs, once per (name, split, data); why not, where they cannot be."""

    def __init__(self):
        self.built: dict[tuple, Any] = {}

    def get(self, run: dict[str, Any], data_options: list[str | None]) -> tuple[Any, str | None, str | None]:
        """(benchmark, the data it read, None) or (None, None, why): each stored data location is tried."""
        from harness.api import BENCHMARKS, DataError, UnknownName

        why = None
        for data in data_options:
            k = (run["benchmark"], run.get("split"), data)
            if k not in self.built:
                try:
                    bench = BENCHMARKS.get(run["benchmark"])(data, run.get("split"))
                    len(bench)  # loads the data: a DataError surfaces here
                    self.built[k] = (bench, None)
                except UnknownName as exc:
                    self.built[k] = (None, f"benchmark {run['benchmark']!r} is not installed here: {exc}")
                except (DataError, OSError, ValueError) as exc:
                    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    self.built[k] = (None, f"data not found: {text}")
            bench, why = self.built[k]
            if bench is None:
                continue
            stored = run.get("data_fingerprint")
            if stored and bench.fingerprint() != stored:
                why = (f"the {run['benchmark']} data at {data or 'its default location'} (fingerprint "
                       f"{bench.fingerprint()}) is not the data the run was made on ({stored})")
                continue
            return bench, data, None
        return None, None, why or "data not found"


def _score(rows: list[dict[str, Any]], bench) -> tuple[dict, dict]:
    """The runner's ``_score``: metrics from the stored rows, and the official score over the same rows."""
    from harness.run.metrics import summarize
    from harness.run.runner import score_rows

    return summarize(rows), (score_rows(rows, bench) if bench is not None else {})


# -- writing -------------------------------------------------------------------------------------------


def _insert_rows(s, run_id: int, rows: list[dict[str, Any]]) -> None:
    table = SampleRow.__table__
    for begin in range(0, len(rows), _INSERT_CHUNK):
        s.execute(insert(table), [{**row, "run_id": run_id} for row in rows[begin:begin + _INSERT_CHUNK]])


def _insert_score(s, run_id: int, score: dict[str, Any]) -> None:
    keep = {"kind", "scorer", "accuracy", "details", "created_at"}
    s.execute(insert(Score.__table__), [{**{k: v for k, v in score.items() if k in keep and v is not None},
                                         "run_id": run_id}])


def _settle(s, parts: list[_Part], target: _Part | None, union: _Union, benchmarks: _Benchmarks) -> MergedRun:
    """Write one key's merge: the run (new, or the target's), the rows it lacks, its scores and status."""
    now = utcnow()
    base = target or parts[0]
    run = dict(base.run)
    rows = union.rows
    added = [row for uid, row in rows.items() if uid not in base.rows]
    to_write = [row for uid, row in rows.items() if target is None or uid not in target.rows]
    everyone = ([target] if target else []) + parts
    peaks = [p.run.get("peak_memory_mb") for p in everyone if p.run.get("peak_memory_mb") is not None]
    peak = round(max(peaks), 1) if peaks else None
    complete = _plan_check(run, rows)
    values: dict[str, Any] = {}
    new_official = None
    not_scored = None
    if not added and (run.get("status") == "finished" or (target is not None and not complete)):
        pass  # as stored: nothing new for it (the same run again, or a share the target already has)
    elif complete:
        datas = list(dict.fromkeys((p.run.get("subset") or {}).get("data") for p in everyone))
        bench, data, not_scored = benchmarks.get(run, datas)
        ordered = sorted(rows.values(), key=lambda r: (r["position"], r["uid"]))
        metrics, official = _score(ordered, bench)
        metrics["peak_memory_mb"] = peak
        values = dict(status="finished", metrics=metrics, official=official or None, error=None,
                      peak_memory_mb=peak, finished_at=now)
        if bench is not None and data != (run.get("subset") or {}).get("data"):
            values["subset"] = {**(run.get("subset") or {}), "data": data}  # where `harness rescore` finds it
        new_official = official or None
        if bench is not None and not official:
            not_scored = f"none of its samples could be read from the {run['benchmark']} data"
    else:
        n = run.get("n_planned")
        values = dict(status="partial", metrics=None, official=None, finished_at=None, peak_memory_mb=peak,
                      error=f"merged: {len(rows)} of {n if n is not None else '?'} planned rows stored; merge the "
                            "other shards' databases into it (harness merge), or run without --shard to finish")

    if target is None:
        fields = {k: v for k, v in run.items() if k in RUN_FIELDS}
        starts = [p.run["started_at"] for p in parts if p.run.get("started_at") is not None]
        fields.update(values, started_at=min(starts) if starts else now, updated_at=now)
        run_id = s.execute(insert(Run.__table__).values(**fields)).inserted_primary_key[0]
        action = "copied" if not added else "merged"
    else:
        run_id = target.run["id"]
        if values or to_write:
            s.execute(update(Run.__table__).where(Run.__table__.c.id == run_id).values(**values, updated_at=now))
        action = "merged" if (values or to_write) else "unchanged"
    _insert_rows(s, run_id, to_write)

    # Scores: the target's stay; a source's is carried over when the run it scored held every row the
    # merged run holds (a score of one shard's rows describes no merged run) and the target has none of
    # that kind and scorer. A new official score replaces its kind and scorer, as `Store.add_score` does.
    have = {(sc["kind"], sc["scorer"]) for sc in (target.scores if target else [])}
    if new_official:
        kind = new_official.get("scoring", "official")
        scorer = new_official.get("scorer", f"{run['benchmark']}:{kind}")
        s.execute(delete(Score.__table__).where(Score.__table__.c.run_id == run_id, Score.__table__.c.kind == kind,
                                                Score.__table__.c.scorer == scorer))
        _insert_score(s, run_id, {"kind": kind, "scorer": scorer, "created_at": now, "details": new_official,
                                  "accuracy": (new_official.get("overall") or {}).get("accuracy")})
        have.add((kind, scorer))
    copied_score = False
    for part in parts:
        if len(part.rows) != len(rows):
            continue
        for sc in part.scores:
            if (sc["kind"], sc["scorer"]) not in have:
                _insert_score(s, run_id, sc)
                have.add((sc["kind"], sc["scorer"]))
                copied_score = True
    if copied_score and action == "unchanged":
        action = "merged"

    status = values.get("status", run.get("status"))
    official = values["official"] if "official" in values else run.get("official")
    accuracy = ((official or {}).get("overall") or {}).get("accuracy")
    return MergedRun(run_id=run_id, key=run["key"], method=run.get("method"), benchmark=run.get("benchmark"),
                     model=run.get("model"), action=action, rows_added=len(to_write), rows=len(rows),
                     n_planned=run.get("n_planned"), status=status,
                     sources=list(dict.fromkeys(p.where for p in parts)), official_accuracy=accuracy,
                     not_scored=not_scored if status == "finished" and not official else None)


def _target_error(run: dict[str, Any], label: str) -> str | None:
    if run.get("status") == "running" and stale_reason(run) is None:
        return (f"{_describe(run)} is running in {label} (run {run['id']}, pid {run.get('owner_pid')} on "
                f"{run.get('owner_host')}); merge into it once it has ended; nothing was written")
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        ua, ub = make_url(a), make_url(b)
    except Exception:
        return False
    if ua.get_backend_name() != "sqlite" or ub.get_backend_name() != "sqlite":
        return ua.render_as_string(hide_password=False) == ub.render_as_string(hide_password=False)
    if not ua.database or not ub.database or ":memory:" in (ua.database, ub.database):
        return False
    try:
        return Path(ua.database).resolve() == Path(ub.database).resolve()
    except OSError:
        return False


def merge(sources: list[str], into: str) -> MergeReport:
    """Union ``sources`` (paths or URLs, read only) into ``into`` (created if missing) in one transaction.

    Raises :class:`MergeError` (a ``ValueError``; nothing written) for rows that differ, a source that
    cannot be read, and a target run still running in a live process.
    """
    began = time.perf_counter()
    if not sources:
        raise MergeError("give at least one source database to merge")
    into_label = _shown(into)
    try:
        target_url = check_url(into, write=True)
    except StoreError as exc:
        raise _relabel(exc, into, "--into") from None
    for src in sources:
        try:
            same = _same_file(check_url(src, write=False), target_url)
        except StoreError as exc:
            raise _relabel(exc, src, "source") from None
        if same:
            raise MergeError(f"source {_shown(src)} is the --into database itself; merge other databases into it")

    # 1. The sources, read and checked among themselves before the target is opened (or created).
    by_key: dict[str, list[_Part]] = {}
    superseded = 0
    for src in sources:
        parts, skipped = read_source(src)
        superseded += skipped
        for part in parts:
            by_key.setdefault(part.run["key"], []).append(part)
    unions = {}
    for key, parts in by_key.items():
        u = _Union(parts[0].run)
        for part in parts:
            u.add(part)
        unions[key] = u
    _check(unions.values())
    for key, u in unions.items():
        _plan_check(u.run, u.rows)

    # 2. The target: its runs of these keys read, checked and written in one transaction.
    path = None
    u_target = make_url(target_url)
    if u_target.get_backend_name() == "sqlite" and u_target.database and ":memory:" not in u_target.database:
        path = Path(u_target.database)
    existed = path is None or path.exists()
    try:
        store = Store(into, heartbeat_s=0)
    except StoreError as exc:
        raise _relabel(exc, into, "--into") from None
    benchmarks = _Benchmarks()
    target_where = f"{into_label} (the target)"

    def tx(s) -> list[MergedRun]:
        conn = s.connection()
        live = _live_runs(conn, set(by_key))
        latest: dict[str, dict[str, Any]] = {}
        for run in live:  # the newest live run of a key is the one `harness run` resumes
            latest[run["key"]] = run
        for run in latest.values():
            problem = _target_error(run, into_label)
            if problem:
                raise MergeError(problem)
        targets = {p.run["key"]: p for p in _read_parts(conn, target_where, latest.values())}
        merged = {}
        for key, parts in by_key.items():
            target = targets.get(key)
            if target is None:
                merged[key] = unions[key]
                continue
            u = _Union(target.run)
            u.add(target)
            u.add_union(unions[key])  # the sources were checked among themselves already
            merged[key] = u
        _check(merged.values())
        for key, u in merged.items():
            _plan_check(u.run, u.rows)
        return [_settle(s, by_key[key], targets.get(key), merged[key], benchmarks) for key in by_key]

    try:
        results = store._write(tx)
    except BaseException:
        store.close()
        if not existed and path is not None:  # nothing stays behind from a merge that wrote nothing
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
                leftover.unlink(missing_ok=True)
        raise
    store.close()
    results.sort(key=lambda r: r.run_id)
    return MergeReport(into=into_label, sources=[_shown(s) for s in sources], runs=results,
                       superseded_skipped=superseded, seconds=round(time.perf_counter() - began, 3))


def format_report(report: MergeReport, into_arg: str) -> str:
    """One line per run, the complete runs that could not be scored here, and a summary line."""
    lines = []
    for r in report.runs:
        what = f"{r.method} on {r.benchmark}, {r.model}; key {r.key[:12]}…"
        of = f"{r.rows} of {r.n_planned}" if r.n_planned is not None else f"{r.rows}"
        added = f"{r.rows_added} rows added, " if r.action != "copied" else ""
        state = r.status
        if r.status == "partial" and r.n_planned is not None:
            state = f"partial ({r.n_planned - r.rows} planned rows missing)"
        elif r.official_accuracy is not None:
            state += f", official {r.official_accuracy:.2f} %"
        lines.append(f"run {r.run_id}: {r.action} ({what}): {added}{of} rows, {state}")
    for r in report.runs:
        if r.not_scored:
            lines.append(f"run {r.run_id}: complete, official score not computed ({r.not_scored}); score it with "
                         f"harness rescore {r.run_id} --db {into_arg}")
    counts = {a: sum(r.action == a for r in report.runs) for a in ("copied", "merged", "unchanged")}
    skipped = f"; {report.superseded_skipped} superseded runs skipped" if report.superseded_skipped else ""
    n = len(report.sources)
    lines.append(f"merged {n} database{'s' if n != 1 else ''} into {report.into}: {counts['copied']} runs copied, "
                 f"{counts['merged']} merged, {counts['unchanged']} unchanged{skipped} ({report.seconds:.1f} s)")
    return "\n".join(lines)
