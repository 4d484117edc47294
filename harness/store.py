"""Results store: runs and per-sample rows in SQLite (or any SQLAlchemy URL).

Kept free of torch/transformers/pandas so the CLI and the leaderboard stay fast.
"""
from __future__ import annotations

import os
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, and_, create_engine, delete, event, func, or_, select, update)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

DEFAULT_URL = "sqlite:///results/harness.db"
STATUSES = ("running", "finished", "failed", "interrupted", "superseded")
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC (SQLite has no time zones) and hands back aware UTC datetimes."""
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    method: Mapped[str] = mapped_column(String(200))
    method_config: Mapped[dict | None] = mapped_column(JSON, default=dict)
    model: Mapped[str] = mapped_column(String(500))
    model_revision: Mapped[str | None] = mapped_column(String(200))
    backbone_family: Mapped[str | None] = mapped_column(String(100))
    benchmark: Mapped[str] = mapped_column(String(200))
    split: Mapped[str | None] = mapped_column(String(100))
    subset: Mapped[dict | None] = mapped_column(JSON, default=dict)
    data_fingerprint: Mapped[str | None] = mapped_column(String(200))
    n_planned: Mapped[int | None] = mapped_column(Integer)
    harness_version: Mapped[str | None] = mapped_column(String(50))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    library_versions: Mapped[dict | None] = mapped_column(JSON, default=dict)
    device: Mapped[str | None] = mapped_column(String(200))
    dtype: Mapped[str | None] = mapped_column(String(50))
    seed: Mapped[int | None] = mapped_column(Integer)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    metrics: Mapped[dict | None] = mapped_column(JSON)
    official: Mapped[dict | None] = mapped_column(JSON)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class Sample(Base):
    __tablename__ = "samples"
    # (run_id, position): the leaderboard's run page pages a run's rows in data order.
    __table_args__ = (UniqueConstraint("run_id", "uid"), Index("ix_samples_run_position", "run_id", "position"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    uid: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    category: Mapped[str | None] = mapped_column(String(200), default="")
    prompt: Mapped[str | None] = mapped_column(Text, default="")
    prediction: Mapped[str | None] = mapped_column(Text, default="")
    answer: Mapped[str | None] = mapped_column(Text, default="")
    extracted: Mapped[str | None] = mapped_column(String(500))  # None: nothing extracted
    gold: Mapped[str | None] = mapped_column(String(500), default="")
    correct: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)  # set when the sample could not be run
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    generated_tokens: Mapped[int | None] = mapped_column(Integer)
    latent_steps: Mapped[int | None] = mapped_column(Integer)
    latency_s: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict | None] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


SCORE_KINDS = ("official", "judge", "rule-based")


class Score(Base):
    """One scoring of a run's stored predictions. A run gets one at its end; ``harness rescore``
    adds more (e.g. an LLM judge over a run first scored rule-based). Kinds are different metrics
    and are never merged into one column: official (the benchmark's own rule, no model in the
    loop), judge (an LLM judge, named in ``scorer``), rule-based (our rule where the official
    metric needs a judge)."""

    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    scorer: Mapped[str] = mapped_column(String(500), default="")  # e.g. "judge:gpt-4o-mini@http://..."
    accuracy: Mapped[float | None] = mapped_column(Float)  # percent, the headline number
    details: Mapped[dict | None] = mapped_column(JSON, default=dict)  # the scorer's full output
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReportedResult(Base):
    """A number a paper reports (``harness import-paper-results``), kept apart from measured runs:
    the leaderboard shows it beside a run only when method, backbone and benchmark all match."""

    __tablename__ = "reported_results"
    __table_args__ = (UniqueConstraint("source", "method", "backbone", "benchmark", "metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(500))  # paper and table, e.g. "LaRe (Ma et al.), Table 1"
    method: Mapped[str] = mapped_column(String(200))  # the paper's display name
    backbone: Mapped[str] = mapped_column(String(200))
    benchmark: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(100))  # accuracy | tokens_on_correct | ...
    value: Mapped[float] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(Text, default="")
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def _create_schema(conn) -> None:
    """Missing tables, then missing indexes: ``create_all`` skips the indexes of a table that already
    exists, so an index added later reaches an older database only through ``checkfirst``."""
    Base.metadata.create_all(conn)
    for table in Base.metadata.sorted_tables:
        for index in table.indexes:
            index.create(conn, checkfirst=True)


class TextSideMetric(Base):
    """A text-only metric tied to an L2V-CoT direction file (``harness l2v textside|analyze``):
    an lm-eval task score of the source LLM or of the VLM's language side, steered or not, or a
    LAT dispersion figure (task ``lat-analysis``). Kept apart from benchmark runs."""

    __tablename__ = "text_side_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vector_sha: Mapped[str | None] = mapped_column(String(64), index=True)  # sha256 of the direction file
    vector_path: Mapped[str | None] = mapped_column(String(1000))
    model: Mapped[str] = mapped_column(String(500))
    steered: Mapped[bool] = mapped_column(Boolean, default=False)
    alpha: Mapped[float | None] = mapped_column(Float)
    layer: Mapped[int | None] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(200))
    value: Mapped[float | None] = mapped_column(Float)
    n: Mapped[int | None] = mapped_column(Integer)
    config: Mapped[dict | None] = mapped_column(JSON, default=dict)  # everything else that produced it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


RUN_FIELDS = frozenset(c.name for c in Run.__table__.columns) - {"id"}
SAMPLE_FIELDS = frozenset(c.name for c in Sample.__table__.columns) - {"id", "run_id"}
# Kept as they were when a run is resumed; everything else passed in is refreshed.
_KEEP_ON_RESUME = frozenset({"key", "status", "started_at", "finished_at", "metrics", "official",
                             "peak_memory_mb", "error"})


def _as_dict(obj: Base) -> dict[str, Any]:
    out = {}
    for col in obj.__table__.columns:
        v = getattr(obj, col.name)
        out[col.name] = v.isoformat() if isinstance(v, datetime) else v
    return out


def _resolve_url(url: str | None) -> str:
    url = url or os.environ.get("HARNESS_DB") or DEFAULT_URL
    return url if "://" in url else f"sqlite:///{url}"  # a bare path is taken as a SQLite file


def _is_locked(exc: OperationalError) -> bool:
    msg = str(exc.orig).lower()
    return "database is locked" in msg or "database is busy" in msg


class Store:
    """Runs and samples; every write is one short transaction."""

    def __init__(self, url: str | None = None, *, read_only: bool = False):
        self.url = _resolve_url(url)
        self.read_only = read_only
        u = make_url(self.url)
        self._sqlite = u.get_backend_name() == "sqlite"
        db = u.database or ""
        is_file = self._sqlite and db not in ("", ":memory:") and not db.startswith("file:")

        if is_file and read_only:
            if not Path(db).is_file():
                raise FileNotFoundError(f"results database {db!r} does not exist "
                                        f"(set HARNESS_DB or pass a URL)")
            u = u.set(database=f"file:{Path(db).resolve()}", query={"mode": "ro", "uri": "true"})
        elif is_file:
            Path(db).parent.mkdir(parents=True, exist_ok=True)

        self.engine = create_engine(u)
        if self._sqlite:
            self._setup_sqlite()
        # Writes go through this engine: on SQLite they take the write lock up front
        # (BEGIN IMMEDIATE), so the busy timeout applies instead of a failed lock upgrade.
        self._wengine = self.engine.execution_options(harness_write=True)
        if not read_only:
            self._write(lambda s: _create_schema(s.connection()))

    def _setup_sqlite(self) -> None:
        ro = self.read_only

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=60000")
            if not ro:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn):
            write = conn.get_execution_options().get("harness_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------

    def _write(self, fn: Callable[[Session], T], attempts: int = 6) -> T:
        if self.read_only:
            raise PermissionError(f"store {self.url} is opened read-only")
        for i in range(attempts):
            try:
                with Session(self._wengine, expire_on_commit=False) as s, s.begin():
                    return fn(s)
            except OperationalError as exc:
                # Last resort: busy_timeout already waited; back off and redo the transaction.
                if not _is_locked(exc) or i == attempts - 1:
                    raise
                time.sleep(0.05 * 2 ** i * (1 + random.random()))
        raise AssertionError("unreachable")

    def _read(self) -> Session:
        return Session(self.engine)

    # -- writes ---------------------------------------------------------------------

    def start_run(self, key: str, fields: dict[str, Any],
                  fresh: bool = False) -> tuple[int, set[str], bool]:
        """Resume the live run with this key, or create one. Returns (run_id, done_uids, resumed)."""
        unknown = set(fields) - RUN_FIELDS
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")

        def tx(s: Session) -> tuple[int, set[str], bool]:
            now = utcnow()
            live = Run.key == key, Run.status != "superseded"
            if fresh:
                s.execute(update(Run).where(*live).values(status="superseded", updated_at=now))
            else:
                run = s.scalars(select(Run).where(*live).order_by(Run.id.desc()).limit(1)).first()
                if run is not None:
                    for k, v in fields.items():
                        if k not in _KEEP_ON_RESUME:
                            setattr(run, k, v)
                    run.status, run.updated_at, run.finished_at, run.error = "running", now, None, None
                    done = set(s.scalars(select(Sample.uid).where(Sample.run_id == run.id)))
                    return run.id, done, True
            run = Run(**{**fields, "key": key, "status": "running",
                         "started_at": fields.get("started_at") or now, "updated_at": now})
            s.add(run)
            s.flush()
            return run.id, set(), False

        return self._write(tx)

    def add_samples(self, run_id: int, rows: list[dict[str, Any]]) -> None:
        """Insert rows in one transaction (all or nothing); rows whose uid is already stored are skipped."""
        for row in rows:
            unknown = set(row) - SAMPLE_FIELDS - {"run_id"}
            if unknown:
                raise ValueError(f"unknown sample fields: {sorted(unknown)}")

        def tx(s: Session) -> None:
            uids = [row.get("uid") for row in rows]
            done = set(s.scalars(select(Sample.uid).where(Sample.run_id == run_id,
                                                          Sample.uid.in_(uids))))
            for row in rows:
                if row.get("uid") in done:
                    continue
                done.add(row.get("uid"))
                s.add(Sample(**{**row, "run_id": run_id}))
            s.flush()  # surfaces bad rows here, inside the transaction
            s.execute(update(Run).where(Run.id == run_id).values(updated_at=utcnow()))

        self._write(tx)

    def finish_run(self, run_id: int, *, status: str, metrics: dict | None,
                   official: dict | None, peak_memory_mb: float | None = None,
                   error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        now = utcnow()
        values = dict(status=status, metrics=metrics, official=official, error=error,
                      peak_memory_mb=peak_memory_mb, updated_at=now, finished_at=now)
        n = self._write(lambda s: s.execute(update(Run).where(Run.id == run_id).values(**values)).rowcount)
        if not n:
            raise KeyError(self._missing(run_id))

    def add_score(self, run_id: int, *, kind: str, scorer: str, accuracy: float | None,
                  details: dict | None) -> int:
        """Store one scoring of a run, replacing an earlier one by the same kind and scorer; returns its id."""
        if kind not in SCORE_KINDS:
            raise ValueError(f"score kind must be one of {SCORE_KINDS}, not {kind!r}")

        def tx(s: Session) -> int:
            if s.get(Run, run_id) is None:
                raise KeyError(self._missing(run_id))
            s.execute(delete(Score).where(Score.run_id == run_id, Score.kind == kind, Score.scorer == scorer))
            score = Score(run_id=run_id, kind=kind, scorer=scorer, accuracy=accuracy, details=details or {})
            s.add(score)
            s.flush()
            return score.id

        return self._write(tx)

    def scores(self, run_id: int | None = None, *, kind: str | None = None) -> list[dict[str, Any]]:
        """Scorings, oldest first (all runs, or one)."""
        q = select(Score)
        if run_id is not None:
            q = q.where(Score.run_id == run_id)
        if kind is not None:
            q = q.where(Score.kind == kind)
        with self._read() as s:
            return [_as_dict(x) for x in s.scalars(q.order_by(Score.id))]

    def add_text_metrics(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert text-side metric rows in one transaction; returns their ids."""
        fields = frozenset(c.name for c in TextSideMetric.__table__.columns) - {"id"}
        for row in rows:
            unknown = set(row) - fields
            if unknown:
                raise ValueError(f"unknown text-side metric fields: {sorted(unknown)}")

        def tx(s: Session) -> list[int]:
            objs = [TextSideMetric(**row) for row in rows]
            s.add_all(objs)
            s.flush()
            return [obj.id for obj in objs]

        return self._write(tx)

    def text_metrics(self, *, vector_sha: str | None = None, model: str | None = None,
                     task: str | None = None) -> list[dict[str, Any]]:
        """Text-side metric rows, oldest first, optionally filtered."""
        q = select(TextSideMetric)
        for col, val in ((TextSideMetric.vector_sha, vector_sha), (TextSideMetric.model, model),
                         (TextSideMetric.task, task)):
            if val is not None:
                q = q.where(col == val)
        with self._read() as s:
            return [_as_dict(x) for x in s.scalars(q.order_by(TextSideMetric.id))]

    # -- reads ----------------------------------------------------------------------

    def _missing(self, run_id: int) -> str:
        return f"no run {run_id} in {self.url}; `harness runs` lists them"

    def _run_query(self):
        n = (select(Sample.run_id, func.count().label("n_samples"))
             .group_by(Sample.run_id).subquery())
        return select(Run, func.coalesce(n.c.n_samples, 0)).outerjoin(n, n.c.run_id == Run.id)

    @staticmethod
    def _run_dict(run: Run, n_samples: int) -> dict[str, Any]:
        return {**_as_dict(run), "n_samples": n_samples}

    def runs(self, *, method: str | None = None, benchmark: str | None = None,
             model: str | None = None, status: str | None = None, key: str | None = None,
             include_superseded: bool = False) -> list[dict[str, Any]]:
        """Runs, newest first; each dict also carries n_samples (rows stored so far)."""
        q = self._run_query()
        for col, val in ((Run.method, method), (Run.benchmark, benchmark), (Run.model, model),
                         (Run.status, status), (Run.key, key)):
            if val is not None:
                q = q.where(col == val)
        if not include_superseded and status != "superseded":
            q = q.where(Run.status != "superseded")
        with self._read() as s:
            return [self._run_dict(r, n) for r, n in s.execute(q.order_by(Run.id.desc()))]

    def run(self, run_id: int) -> dict[str, Any]:
        with self._read() as s:
            row = s.execute(self._run_query().where(Run.id == run_id)).first()
        if row is None:
            raise KeyError(self._missing(run_id))
        return self._run_dict(*row)

    def samples(self, run_id: int) -> list[dict[str, Any]]:
        return list(self.iter_samples(run_id))

    def iter_samples(self, run_id: int, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Samples by position, fetched in keyset pages so no read transaction stays open long."""
        last: tuple[int, int] | None = None
        while True:
            q = select(Sample).where(Sample.run_id == run_id)
            if last is not None:
                q = q.where(or_(Sample.position > last[0],
                                and_(Sample.position == last[0], Sample.id > last[1])))
            with self._read() as s:
                page = [_as_dict(x) for x in s.scalars(q.order_by(Sample.position, Sample.id).limit(batch))]
            yield from page
            if len(page) < batch:
                return
            last = (page[-1]["position"], page[-1]["id"])
