"""Results store: runs and per-sample rows in SQLite (or any SQLAlchemy URL).

Kept free of torch/transformers/pandas so the CLI and the leaderboard stay fast.

Runs that died: every run records the process that owns it (host, pid, the process's start time) and
a heartbeat (``heartbeat_at``, refreshed every ``HEARTBEAT_S`` seconds by a daemon thread while the
run is open, and by every batch written). A run whose status is ``running`` but whose owner is gone
reads as ``stale``: on this host when its pid is not alive (or was reused by another process: the
start time differs); on another host (or with no owner recorded: a database from before these
columns) when its heartbeat is older than ``STALE_AFTER_S`` (5 minutes; ``$HARNESS_STALE_AFTER_S``).
Re-running the same command takes a stale run over and resumes it.

SQLite: WAL while a writer has the file open; a writing store checkpoints the WAL into the main file
when it is closed (explicitly, when garbage-collected, or at interpreter exit) and, when it is the
last connection, returns the file to rollback mode, so ``harness.db`` alone holds every run.

PostgreSQL (``postgresql+psycopg://USER:PASSWORD@HOST/DBNAME``): writers on many hosts share one
database. Opening the schema is serialised by an advisory lock (two processes opening a fresh database
at once), ``add_samples`` inserts with ``ON CONFLICT DO NOTHING`` (two processes storing the same uid),
and a transaction the server aborts as a deadlock or serialization failure is redone. A read-only store
makes every session ``READ ONLY`` on the server and never creates or alters anything, so a role with
SELECT rights only can open it.
"""
from __future__ import annotations

import logging
import math
import os
import random
import re
import socket
import sqlite3
import sys
import threading
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, and_, create_engine, delete, event, func, inspect, or_, select,
                        update)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

DEFAULT_URL = "sqlite:///results/harness.db"
# "partial": one share of a run split across databases (``harness run --shard I/N``) is stored and
# the run awaits the others (``harness merge`` unions them and scores it once complete).
STATUSES = ("running", "finished", "failed", "interrupted", "superseded", "partial")
# Never stored: what a stored "running" reads as once its owner is gone (see stale_reason).
STALE = "stale"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
T = TypeVar("T")
log = logging.getLogger(__name__)


class StoreError(ValueError):
    """A --db that cannot be used, said in one line (the CLI prints it and exits 2); nothing was written."""


class DatabaseNotFound(StoreError, FileNotFoundError):
    """A reading command pointed at a database file that does not exist (none is created)."""


class RunInProgress(StoreError):
    """The run with this key is running in a live process; resuming it would compute it twice."""


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
    # The process that runs it (set by start_run, taken over on resume) and its heartbeat. Added to
    # older databases by ALTER TABLE when a writer opens them; see stale_reason.
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    owner_started: Mapped[float | None] = mapped_column(Float)  # the process's start time (epoch s)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SampleRow(Base):
    """One stored answer of a run (the benchmark item itself is ``harness.api.Sample``)."""
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
    # Text, not String(n): PostgreSQL enforces lengths, and a model's extracted answer can be long.
    extracted: Mapped[str | None] = mapped_column(Text)  # None: nothing extracted
    gold: Mapped[str | None] = mapped_column(Text, default="")
    correct: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)  # set when the sample could not be run
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    generated_tokens: Mapped[int | None] = mapped_column(Integer)
    latent_steps: Mapped[int | None] = mapped_column(Integer)
    latency_s: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict | None] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# "reference": a published method's own evaluation rule (e.g. IVT-LR's lenient M3CoT regex), kept so that
# our numbers can be lined up with a paper's; never the official score.
SCORE_KINDS = ("official", "judge", "rule-based", "reference")


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


# pg_advisory_xact_lock key (b"harness\0" as a big-endian integer) that serialises schema creation.
_PG_SCHEMA_LOCK = 0x6861726E65737300


def _create_schema(conn) -> None:
    """Missing tables, missing columns, then missing indexes: ``create_all`` skips the columns and
    indexes of a table that already exists, so a column added later reaches an older database by
    ``ALTER TABLE ... ADD COLUMN`` (nullable, no default: old rows read NULL) and an index through
    ``checkfirst``.

    PostgreSQL: two processes opening a fresh database at once would both find no tables and both
    create them (the second fails on a duplicate catalog row), so the check-and-create runs under a
    transaction-scoped advisory lock: the second waits for the first to commit, then finds the tables."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK)))
    Base.metadata.create_all(conn)
    insp = inspect(conn)
    prep = conn.dialect.identifier_preparer
    for table in Base.metadata.sorted_tables:
        have = {c["name"] for c in insp.get_columns(table.name)}
        for col in table.columns:
            if col.name in have:
                continue
            if not col.nullable:
                raise StoreError(f"table {table.name} lacks the required column {col.name}; "
                                 "this database was written by an incompatible harness version")
            if_not = "IF NOT EXISTS " if conn.dialect.name == "postgresql" else ""  # concurrent writers
            conn.exec_driver_sql(f"ALTER TABLE {prep.format_table(table)} ADD COLUMN {if_not}"
                                 f"{prep.format_column(col)} {col.type.compile(dialect=conn.dialect)}")
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
OWNER_FIELDS = ("owner_host", "owner_pid", "owner_started")
SAMPLE_FIELDS = frozenset(c.name for c in SampleRow.__table__.columns) - {"id", "run_id"}
# Kept as they were when a run is resumed; everything else passed in is refreshed.
_KEEP_ON_RESUME = frozenset({"key", "status", "started_at", "finished_at", "metrics", "official",
                             "peak_memory_mb", "error"})


def _as_dict(obj: Base) -> dict[str, Any]:
    out = {}
    for col in obj.__table__.columns:
        v = getattr(obj, col.name)
        out[col.name] = v.isoformat() if isinstance(v, datetime) else v
    return out


_SQLITE_HEADER = b"SQLite format 3\x00"
# Backend names that, written before a colon without "//", mean a mistyped URL rather than a file name.
_URL_WORDS = {"sqlite", "postgresql", "postgres", "pg", "psql", "mysql", "mariadb", "oracle", "mssql",
              "file", "http", "https"}
# driver → what to install (the URL's driver is SQLAlchemy's name for the DBAPI module).
_DRIVER_PACKAGES = {"psycopg": 'pip install "psycopg[binary]"', "psycopg2": "pip install psycopg2-binary",
                    "pg8000": "pip install pg8000", "mysqldb": "pip install mysqlclient",
                    "pymysql": "pip install PyMySQL", "mysqlconnector": "pip install mysql-connector-python",
                    "mariadbconnector": "pip install mariadb", "oracledb": "pip install oracledb",
                    "cx_oracle": "pip install cx_Oracle", "pyodbc": "pip install pyodbc",
                    "pymssql": "pip install pymssql"}
_URL_HELP = ("a file path, sqlite:///PATH (e.g. sqlite:///results/harness.db) or "
             "postgresql+psycopg://USER:PASSWORD@HOST/DBNAME")


def _safe(url: str) -> str:
    """The URL for messages: any password hidden."""
    try:
        u = make_url(url)
        return url if u.password is None else u.render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _owned_by(run: Run, owner: dict[str, Any]) -> bool:
    return run.owner_host == owner["owner_host"] and run.owner_pid == owner["owner_pid"]


def _in_progress(run: dict[str, Any]) -> str:
    beat = _as_utc(run.get("heartbeat_at")) or _as_utc(run.get("updated_at"))
    when = beat.strftime("%Y-%m-%d %H:%M:%S UTC") if beat else "unknown"
    return (f"run {run['id']} with this configuration is already running (pid {run.get('owner_pid')} on "
            f"{run.get('owner_host')}, last heartbeat {when}); wait for it to end or stop it, then re-run to "
            f"resume (a run on another host counts as dead once its heartbeat is "
            f"{stale_after_s() / 60:g} minutes old)")


def _given(url: str | None) -> tuple[str, str]:
    """The database asked for, and how messages name it: the --db value, $HARNESS_DB, or the default."""
    if url and url.strip():
        return url.strip(), "--db"
    if (os.environ.get("HARNESS_DB") or "").strip():
        return os.environ["HARNESS_DB"].strip(), "$HARNESS_DB"
    return DEFAULT_URL, "the default database"


def _label(url: str | None) -> str:
    given, source = _given(url)
    return f"{source} {_safe(given)}"


def _resolve_url(url: str | None) -> str:
    url, source = _given(url)
    if "://" in url:
        return url
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*):(.?)", url)
    if scheme and (scheme.group(1).split("+")[0].lower() in _URL_WORDS or scheme.group(2) in ("/", "\\")) \
            and not (os.name == "nt" and len(scheme.group(1)) == 1):
        raise StoreError(f"{source} {url!r} is not a valid database URL (a URL needs '://'); give {_URL_HELP}")
    return f"sqlite:///{url}"  # a bare path is taken as a SQLite file


def _sqlite_file(u) -> Path | None:
    """The file a SQLite URL names; None for in-memory databases and ``file:`` URIs."""
    db = u.database or ""
    if db in ("", ":memory:") or db.startswith("file:") or u.query.get("mode") == "memory":
        return None
    return Path(db)


def _sqlite_tables(path: Path) -> set[str]:
    """Table names of an existing SQLite file, read without writing anything: ``immutable`` when the
    file is in WAL mode with no -wal beside it (a read-only open would create -wal and -shm there and
    leave them), a plain read-only open otherwise (it then sees what a -wal holds)."""
    with path.open("rb") as fh:
        header = fh.read(100)
    wal_mode = len(header) >= 20 and header[18] == 2
    mode = "immutable=1" if wal_mode and not Path(f"{path}-wal").exists() else "mode=ro"
    uri = f"file:{_uri_path(path)}?{mode}"
    con = sqlite3.connect(uri, uri=True, timeout=5)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.resolve()), safe="/")


def check_url(url: str | None = None, *, write: bool = True) -> str:
    """Check a --db value before anything heavy runs, writing nothing; returns the resolved URL.

    Raises :class:`StoreError` (a ``ValueError``: one line, exit code 2) for a malformed URL, an unknown
    backend, a driver that is not installed (naming the package), and for SQLite: a path that is a
    folder, a file that is not SQLite, a read-only file or folder when writing, an SQLite file with
    other tables but none of ours; and, reading, a file without a runs table ("not a harness results
    database"); :class:`DatabaseNotFound` (also a ``FileNotFoundError``) when reading a file that does
    not exist. ``Store(url)`` calls it first; a server database is only reached when the store opens.
    """
    resolved = _resolve_url(url)
    shown = _label(url)
    try:
        u = make_url(resolved)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(f"{shown} is not a valid database URL ({str(exc).splitlines()[0]}); "
                         f"give {_URL_HELP}") from None
    try:
        dialect = u.get_dialect()
    except NoSuchModuleError:
        backend, _, driver = u.drivername.partition("+")
        hint = " (PostgreSQL is postgresql://, not postgres://)" if backend == "postgres" else ""
        what = f"driver {driver!r} for {backend}" if driver else f"database kind {backend!r}"
        raise StoreError(f"{shown}: unknown {what}{hint}; give {_URL_HELP}") from None
    if getattr(dialect, "is_async", False):
        raise StoreError(f"{shown}: {dialect.driver} is an asyncio driver; use a regular one, "
                         f"e.g. postgresql+psycopg://")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        backend = u.get_backend_name()
        install = _DRIVER_PACKAGES.get(dialect.driver, f"pip install {dialect.driver}")
        extra = ""
        if backend == "postgresql":
            extra = ("; the URL form is postgresql+psycopg://USER:PASSWORD@HOST/DBNAME "
                     "(or pip install psycopg2-binary and postgresql+psycopg2://...)")
        raise StoreError(f"{shown}: the {backend} driver {dialect.driver} is not installed "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         f"{install}{extra}") from None
    if u.get_backend_name() == "sqlite":
        path = _sqlite_file(u)
        if path is not None:
            _check_sqlite_file(path, shown, write)
    return resolved


def _check_sqlite_file(path: Path, shown: str, write: bool) -> None:
    if path.is_dir():
        raise StoreError(f"{shown}: {path} is a folder, not a database file; name a file in it, "
                         f"e.g. {path / 'harness.db'}")
    if path.exists():
        if not path.is_file():
            raise StoreError(f"{shown}: {path} is not a regular file")
        if not os.access(path, os.R_OK):
            raise StoreError(f"{shown}: {path} cannot be read (permission denied)")
        size = path.stat().st_size
        if size:
            with path.open("rb") as fh:
                if fh.read(16) != _SQLITE_HEADER:
                    raise StoreError(f"{shown}: {path} is not an SQLite database (its first bytes are "
                                     "not the SQLite header); point --db at a harness results database or "
                                     "a new file name")
        if write:
            if not os.access(path, os.W_OK):
                raise StoreError(f"{shown}: {path} is read-only (file permissions, an immutable file "
                                 "or a read-only filesystem), so runs cannot be written to it; "
                                 "pass another file or make it writable")
            parent = path.parent
            if not os.access(parent, os.W_OK | os.X_OK):
                raise StoreError(f"{shown}: the folder {parent} is read-only; SQLite writes "
                                 f"{path.name}-wal and {path.name}-shm beside the database")
        try:
            tables = _sqlite_tables(path) if size else set()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{shown}: {path} cannot be read as an SQLite database ({exc})") from None
        if "runs" not in tables:
            if not write:
                what = "an empty file" if not size else (
                    "an SQLite database with no runs table" + (f"; its tables: {', '.join(sorted(tables)[:5])}"
                                                               if tables else ""))
                raise StoreError(f"{shown}: {path} is not a harness results database ({what}); "
                                 "point --db at the file `harness run` writes")
            if tables:
                raise StoreError(f"{shown}: {path} is an SQLite database of something else (tables: "
                                 f"{', '.join(sorted(tables)[:5])}) and not a harness results database; "
                                 "nothing was written to it: pass a new file name")
        return
    if not write:
        raise DatabaseNotFound(f"results database {str(path)!r} does not exist (set HARNESS_DB or pass a URL)")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise StoreError(f"{shown}: cannot create {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise StoreError(f"{shown}: cannot create {path}: the folder {ancestor} is read-only")


def _is_locked(exc: OperationalError) -> bool:
    msg = str(exc.orig).lower()
    return "database is locked" in msg or "database is busy" in msg


# PostgreSQL aborted the transaction so that another could go on (deadlock_detected,
# serialization_failure): redoing it is the documented remedy.
_PG_RETRY_STATES = frozenset({"40P01", "40001"})


def _sqlstate(exc: SQLAlchemyError) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)  # psycopg 3, psycopg2


def _first_line(exc: SQLAlchemyError) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_transient(exc: OperationalError) -> bool:
    return _is_locked(exc) or _sqlstate(exc) in _PG_RETRY_STATES


# -- owners and heartbeats ------------------------------------------------------------------------------
_OWNER: dict[str, Any] = {}


def current_owner() -> dict[str, Any]:
    """This process as a run's owner: host name, pid and the process's start time (epoch seconds)."""
    pid = os.getpid()
    if _OWNER.get("owner_pid") != pid:  # first call, or a forked child
        _OWNER.clear()
        _OWNER.update(owner_host=socket.gethostname(), owner_pid=pid, owner_started=_process_start(pid))
    return dict(_OWNER)


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return round(psutil.Process(pid).create_time(), 3)
    except psutil.Error:  # the process unreadable: liveness then rests on the pid
        return None


def _pid_state(pid: int, started: float | None) -> tuple[bool | None, str]:
    """(alive?, why) for a pid on this host; alive is None when it cannot be told."""
    import psutil  # a dependency of the harness

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False, "has exited"
        if started is not None and abs(proc.create_time() - float(started)) > 1.0:
            return False, "has exited (the pid now belongs to another process)"
        return True, ""
    except psutil.NoSuchProcess:
        return False, "is not running"
    except psutil.AccessDenied:
        return True, ""
    except Exception:
        return None, ""


def _value(x: Any) -> Any:
    """None for missing values, whatever container they came from (dicts, pandas rows: NaN, NaT)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    pd = sys.modules.get("pandas")  # only when the caller already has it (the leaderboard): never imported here
    if pd is not None and (x is pd.NaT or x is pd.NA):
        return None
    return x


def _as_utc(x: Any) -> datetime | None:
    x = _value(x)
    if x is None:
        return None
    if isinstance(x, str):
        try:
            x = datetime.fromisoformat(x)
        except ValueError:
            return None
    if not isinstance(x, datetime):
        return None
    return x.replace(tzinfo=timezone.utc) if x.tzinfo is None else x.astimezone(timezone.utc)


def stale_after_s() -> float:
    try:
        return float(os.environ.get("HARNESS_STALE_AFTER_S") or STALE_AFTER_S)
    except ValueError:
        return STALE_AFTER_S


def stale_reason(run: Mapping[str, Any], *, now: datetime | None = None) -> str | None:
    """Why a run stored as ``running`` is dead, or None (alive, unknown, or not running).

    Owner on this host: its pid is not alive, or the pid belongs to a process started at another time
    (reused). Owner on another host, or none recorded: no heartbeat (nor batch written) for
    ``STALE_AFTER_S`` seconds.
    """
    if run.get("status") != "running":
        return None
    host, pid, started = (_value(run.get(k)) for k in ("owner_host", "owner_pid", "owner_started"))
    if host and pid is not None and host == current_owner()["owner_host"]:
        alive, why = _pid_state(int(pid), None if started is None else float(started))
        if alive is False:
            return f"its process (pid {int(pid)} on {host}) {why}"
        if alive:
            return None
    beats = [t for t in (_as_utc(run.get("heartbeat_at")), _as_utc(run.get("updated_at"))) if t is not None]
    if not beats:
        return None
    age = ((now or utcnow()) - max(beats)).total_seconds()
    limit = stale_after_s()
    if age <= limit:
        return None
    who = f"pid {int(pid)} on {host}" if host and pid is not None else "its owner (not recorded)"
    return f"no heartbeat from {who} for {age / 60:.0f} min (more than {limit / 60:g} min)"


def with_liveness(run: dict[str, Any]) -> dict[str, Any]:
    """The run with ``status`` "stale" (and ``stale_reason``) when it is running but its owner is gone."""
    why = stale_reason(run)
    run["stale_reason"] = why
    if why:
        run["status"] = STALE
    return run


def _beat(run_id: int, owner: dict[str, Any]):
    """The heartbeat write: touches the run only while it is running and still owned by ``owner``."""
    r = Run.__table__.c
    return update(Run.__table__).where(r.id == run_id, r.status == "running", r.owner_pid == owner["owner_pid"],
                                       r.owner_host == owner["owner_host"]).values(heartbeat_at=utcnow())


class _Heartbeat(threading.Thread):
    """Refreshes one run's ``heartbeat_at`` every ``interval`` seconds with its own short write, while
    the run is running and still ours; a failed write is logged and retried at the next tick."""

    def __init__(self, engine, run_id: int, owner: dict[str, Any], interval: float):
        super().__init__(name=f"harness-heartbeat-{run_id}", daemon=True)
        self.engine, self.run_id, self.owner, self.interval = engine, run_id, owner, interval
        self.halt = threading.Event()
        self.beats = 0

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            try:
                with self.engine.begin() as conn:
                    n = conn.execute(_beat(self.run_id, self.owner)).rowcount
            except Exception as exc:  # never the run's problem: the next tick tries again
                log.debug("heartbeat of run %d not written: %s", self.run_id, exc)
                continue
            if not n:  # finished, or taken over by another process
                return
            self.beats += 1

    def stop(self, timeout: float = 5.0) -> None:
        self.halt.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout)


class _Resources:
    """What a Store holds open, closed once: by ``close()``, when the store is garbage-collected, or
    at interpreter exit (``weakref.finalize``), so a command that never calls ``close()`` still
    checkpoints its WAL."""

    def __init__(self, engine, *, checkpoint: bool):
        self.engine = engine
        self.checkpoint = checkpoint
        self.pid = os.getpid()
        self.heartbeats: dict[int, _Heartbeat] = {}
        self.lock = threading.Lock()

    def stop_heartbeat(self, run_id: int) -> None:
        with self.lock:
            beat = self.heartbeats.pop(run_id, None)
        if beat is not None:
            beat.stop()

    def close(self) -> None:
        with self.lock:
            beats, self.heartbeats = list(self.heartbeats.values()), {}
        if os.getpid() != self.pid:  # a forked child: the connections are the parent's, leave them be
            self.engine.dispose(close=False)
            return
        for beat in beats:
            beat.stop(timeout=2.0)
        if self.checkpoint:
            _checkpoint(self.engine)
        self.engine.dispose()


def _checkpoint(engine) -> None:
    """Copy the WAL into the database file and empty it; then, if no other connection has the file
    open, leave WAL mode so the file is self-contained and readers create no -wal/-shm beside it.
    Best effort, with a short busy timeout: another process using the file keeps its WAL going."""
    engine.dispose()  # our idle pooled connections would count as "others" below
    try:
        raw = engine.raw_connection()
    except Exception:
        return
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA busy_timeout=1000")
        busy, _, _ = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            cur.execute("PRAGMA busy_timeout=50")
            cur.execute("PRAGMA journal_mode=DELETE")  # refused while another connection has it open
        cur.close()
    except Exception as exc:
        log.debug("WAL checkpoint skipped: %s", exc)
    finally:
        try:
            raw.close()
        except Exception:
            pass

class Store:
    """Runs and samples; every write is one short transaction."""

    def __init__(self, url: str | None = None, *, read_only: bool = False,
                 heartbeat_s: float | None = None):
        # Everything about the URL is checked before anything is created (StoreError: one line).
        self.url = check_url(url, write=not read_only)
        self._label = _label(url)
        self.read_only = read_only
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else float(heartbeat_s)
        u = make_url(self.url)
        self._sqlite = u.get_backend_name() == "sqlite"
        self._pg = u.get_backend_name() == "postgresql"
        path = _sqlite_file(u) if self._sqlite else None
        self._memory = self._sqlite and path is None and not (u.database or "").startswith("file:")
        created: list[Path] = []

        if path is not None and read_only:
            u = u.set(database=f"file:{_uri_path(path)}", query={"mode": "ro", "uri": "true"})
        elif path is not None:
            missing = [d for d in [path.parent, *path.parent.parents] if not d.exists()]
            existed = path.exists()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self._label}: cannot create the folder {path.parent} "
                                 f"({exc.strerror or exc})") from None
            created = ([] if existed else [path, Path(f"{path}-wal"), Path(f"{path}-shm"),
                                           Path(f"{path}-journal")]) + missing

        # A PostgreSQL host that drops packets would hang the first connection for minutes otherwise.
        timeout = {"connect_timeout": 10} if self._pg and "connect_timeout" not in u.query else {}
        self.engine = create_engine(u, connect_args=timeout)
        if self._sqlite:
            self._setup_sqlite()
        elif self._pg and read_only:
            self._setup_pg_read_only()
        # Writes go through this engine: on SQLite they take the write lock up front
        # (BEGIN IMMEDIATE), so the busy timeout applies instead of a failed lock upgrade.
        self._wengine = self.engine.execution_options(harness_write=True)
        self._res = _Resources(self.engine, checkpoint=self._sqlite and not read_only and not self._memory)
        try:
            if not read_only:
                self._write(lambda s: _create_schema(s.connection()))
            self.run_columns = self._columns()
        except Exception as exc:
            self.engine.dispose()
            for leftover in created:  # nothing stays behind from a store that could not open
                try:
                    leftover.rmdir() if leftover.is_dir() else leftover.unlink(missing_ok=True)
                except OSError:
                    pass
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, SQLAlchemyError):
                raise self._open_error(exc) from None
            raise
        # Closed by close(), at garbage collection or at exit, whichever comes first.
        self._finalizer = weakref.finalize(self, _Resources.close, self._res)

    def _open_error(self, exc: SQLAlchemyError) -> StoreError:
        msg = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        first = msg[0] if msg else type(exc).__name__
        if self._pg:
            pg = self._pg_open_error(first)
            if pg is not None:
                return pg
        if "readonly" in first.lower() or "read-only" in first.lower():
            return StoreError(f"{self._label} is read-only ({first}): runs cannot be written "
                              "to it; pass another file or make it writable")
        if "no such table" in first.lower():
            return StoreError(f"{self._label} is not a harness results database ({first})")
        return StoreError(f"{self._label}: cannot open the database ({first})")

    def _pg_open_error(self, first: str) -> StoreError | None:
        """A PostgreSQL server that cannot be reached or refuses the login, said with the fix."""
        u = make_url(self.url)
        where = f"{u.host or 'the local socket'}:{u.port or 5432}"
        low = first.lower()
        if "password authentication failed" in low or "no password supplied" in low or "pg_hba.conf" in low:
            return StoreError(f"{self._label}: the PostgreSQL server at {where} refused the login ({first}); "
                              "check the user and password in the URL (and the server's pg_hba.conf)")
        missing = re.search(r'database "([^"]*)" does not exist', first)
        if missing:
            return StoreError(f"{self._label}: the PostgreSQL server at {where} has no database "
                              f"{missing.group(1)!r}; create it (createdb -h {u.host or 'HOST'} -U USER "
                              f"{missing.group(1)}) or fix the name in the URL")
        if any(w in low for w in ("connection refused", "could not connect", "connection failed",
                                  "translate host name", "resolve host", "timeout expired", "timed out",
                                  "no route to host", "network is unreachable", "server closed the connection")):
            return StoreError(f"{self._label}: cannot reach the PostgreSQL server at {where} ({first}); "
                              "check that the server is running and accepts connections on that host and port")
        if "permission denied" in low and self.read_only:
            return StoreError(f"{self._label}: cannot read the database ({first}); the role needs CONNECT "
                              "on the database, USAGE on its schema and SELECT on its tables")
        return None

    def _setup_pg_read_only(self) -> None:
        """Every session READ ONLY on the server: a write through this engine fails there (SQLSTATE
        25006), whatever the role may do otherwise."""

        @event.listens_for(self.engine, "connect")
        def _read_only(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cur.close()
            dbapi_conn.commit()  # the SET is transactional: kept only once committed

    def _columns(self) -> frozenset[str]:
        """The runs table's columns as stored: a database from before a column was added, opened
        read-only, lacks it (its reads then leave it None)."""
        if not self.read_only:
            return frozenset(c.name for c in Run.__table__.columns)
        insp = inspect(self.engine)
        if not insp.has_table("runs"):
            raise StoreError(f"{self._label} is not a harness results database (no runs table); "
                             "point --db at the file `harness run` writes")
        return frozenset(c["name"] for c in insp.get_columns("runs"))

    def _setup_sqlite(self) -> None:
        ro = self.read_only

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=60000")
            if ro:
                cur.execute("PRAGMA query_only=ON")  # a second lock besides mode=ro
            else:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn):
            write = conn.get_execution_options().get("harness_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def close(self) -> None:
        """Stop heartbeats, checkpoint the WAL (a writing SQLite store), release the connections."""
        self._finalizer()

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
            except ProgrammingError as exc:
                if _sqlstate(exc) == "42501":  # insufficient_privilege: e.g. a read-only role
                    raise StoreError(f"{self._label}: the database refused the write ({_first_line(exc)}); "
                                     "connect as a role with INSERT and UPDATE on the harness tables") from None
                raise
            except OperationalError as exc:
                # Last resort: busy_timeout already waited (SQLite), or the server aborted this
                # transaction for another's sake (PostgreSQL); back off and redo the transaction.
                if not _is_transient(exc) or i == attempts - 1:
                    raise
                time.sleep(0.05 * 2 ** i * (1 + random.random()))
        raise AssertionError("unreachable")

    def _read(self) -> Session:
        return Session(self.engine)

    # -- writes ---------------------------------------------------------------------

    def start_run(self, key: str, fields: dict[str, Any],
                  fresh: bool = False) -> tuple[int, set[str], bool]:
        """Resume the live run with this key, or create one. Returns (run_id, done_uids, resumed).

        This process becomes the run's owner (host, pid, start time) and a heartbeat thread keeps
        ``heartbeat_at`` fresh until ``finish_run``. A run still ``running`` in another live process is
        not taken over (:class:`RunInProgress`); one whose owner is gone (stale) is, and resumes.
        """
        unknown = set(fields) - RUN_FIELDS
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        owner = current_owner()

        def tx(s: Session) -> tuple[int, set[str], bool]:
            now = utcnow()
            live = Run.key == key, Run.status != "superseded"
            if fresh:
                s.execute(update(Run).where(*live).values(status="superseded", updated_at=now))
            else:
                run = s.scalars(select(Run).where(*live).order_by(Run.id.desc()).limit(1)).first()
                if run is not None:
                    if run.status == "running" and not _owned_by(run, owner):
                        state = _as_dict(run)
                        if stale_reason(state) is None:
                            raise RunInProgress(_in_progress(state))
                    for k, v in fields.items():
                        if k not in _KEEP_ON_RESUME:
                            setattr(run, k, v)
                    for k, v in owner.items():
                        setattr(run, k, v)
                    run.status, run.updated_at, run.finished_at, run.error = "running", now, None, None
                    run.heartbeat_at = now
                    done = set(s.scalars(select(SampleRow.uid).where(SampleRow.run_id == run.id)))
                    return run.id, done, True
            run = Run(**{**fields, **owner, "key": key, "status": "running",
                         "started_at": fields.get("started_at") or now, "updated_at": now, "heartbeat_at": now})
            s.add(run)
            s.flush()
            return run.id, set(), False

        run_id, done, resumed = self._write(tx)
        self._start_heartbeat(run_id, owner)
        return run_id, done, resumed

    def _start_heartbeat(self, run_id: int, owner: dict[str, Any]) -> None:
        if self._memory or self.heartbeat_s <= 0:  # an in-memory database dies with the process anyway
            return
        self._res.stop_heartbeat(run_id)
        beat = _Heartbeat(self._wengine, run_id, owner, self.heartbeat_s)
        with self._res.lock:
            self._res.heartbeats[run_id] = beat
        beat.start()

    def heartbeat(self, run_id: int) -> bool:
        """Refresh a run's heartbeat now (the thread does it every ``heartbeat_s`` seconds); returns
        whether the run is still running and owned by this process. Never raises on a failed write."""
        owner = current_owner()
        try:
            return bool(self._write(lambda s: s.execute(_beat(run_id, owner)).rowcount, attempts=1))
        except Exception as exc:
            log.debug("heartbeat of run %d not written: %s", run_id, exc)
            return False

    def add_samples(self, run_id: int, rows: list[dict[str, Any]]) -> None:
        """Insert rows in one transaction (all or nothing); rows whose uid is already stored are skipped."""
        for row in rows:
            unknown = set(row) - SAMPLE_FIELDS - {"run_id"}
            if unknown:
                raise ValueError(f"unknown sample fields: {sorted(unknown)}")

        def tx(s: Session) -> None:
            uids = [row.get("uid") for row in rows]
            done = set(s.scalars(select(SampleRow.uid).where(SampleRow.run_id == run_id,
                                                          SampleRow.uid.in_(uids))))
            new = []
            for row in rows:
                if row.get("uid") in done:
                    continue
                done.add(row.get("uid"))
                new.append({**row, "run_id": run_id})
            if self._pg:
                # Another process may store one of these uids between the select above and this
                # insert (both committed: the unique (run_id, uid) would fail the second): skip it.
                if new:
                    from sqlalchemy.dialects.postgresql import insert as pg_insert  # ~30 ms: not at CLI start

                    s.execute(pg_insert(SampleRow).on_conflict_do_nothing(index_elements=["run_id", "uid"]), new)
            else:
                s.add_all(SampleRow(**row) for row in new)
            s.flush()  # surfaces bad rows here, inside the transaction
            now = utcnow()
            s.execute(update(Run).where(Run.id == run_id).values(updated_at=now, heartbeat_at=now))

        self._write(tx)

    def finish_run(self, run_id: int, *, status: str, metrics: dict | None,
                   official: dict | None, peak_memory_mb: float | None = None,
                   error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        self._res.stop_heartbeat(run_id)
        now = utcnow()
        values = dict(status=status, metrics=metrics, official=official, error=error,
                      peak_memory_mb=peak_memory_mb, updated_at=now, finished_at=now)

        def tx(s: Session) -> None:
            current = s.scalar(select(Run.status).where(Run.id == run_id))
            if current is None:
                raise KeyError(self._missing(run_id))
            # `--fresh` elsewhere superseded this run while it ran: it stays superseded, not finished.
            s.execute(update(Run).where(Run.id == run_id).values(
                **{**values, "status": "superseded" if current == "superseded" else status}))

        self._write(tx)

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
        """The runs table's stored columns and each run's row count (a correlated count over the
        (run_id) index: only the runs selected are counted)."""
        t = Run.__table__
        n = (select(func.count()).select_from(SampleRow.__table__)
             .where(SampleRow.__table__.c.run_id == t.c.id).correlate(t).scalar_subquery())
        cols = [c for c in t.columns if c.name in self.run_columns]
        return select(*cols, n.label("n_samples"))

    @staticmethod
    def _run_dict(row) -> dict[str, Any]:
        m = row._mapping
        out = {}
        for col in Run.__table__.columns:  # every field, None where an old database lacks the column
            v = m.get(col.name)
            out[col.name] = v.isoformat() if isinstance(v, datetime) else v
        out["n_samples"] = m["n_samples"] or 0
        return with_liveness(out)

    def runs(self, *, method: str | None = None, benchmark: str | None = None,
             model: str | None = None, status: str | None = None, key: str | None = None,
             include_superseded: bool = False) -> list[dict[str, Any]]:
        """Runs, newest first; each dict also carries n_samples (rows stored so far) and, for a run
        stored as running whose owner is gone, status "stale" with ``stale_reason``."""
        t = Run.__table__.c
        q = self._run_query()
        stored = "running" if status == STALE else status
        for col, val in ((t.method, method), (t.benchmark, benchmark), (t.model, model),
                         (t.status, stored), (t.key, key)):
            if val is not None:
                q = q.where(col == val)
        if not include_superseded and status != "superseded":
            q = q.where(t.status != "superseded")
        with self.engine.connect() as conn:
            rows = [self._run_dict(r) for r in conn.execute(q.order_by(t.id.desc()))]
        return rows if status not in ("running", STALE) else [r for r in rows if r["status"] == status]

    def run(self, run_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(self._run_query().where(Run.__table__.c.id == run_id)).first()
        if row is None:
            raise KeyError(self._missing(run_id))
        return self._run_dict(row)

    def samples(self, run_id: int) -> list[dict[str, Any]]:
        return list(self.iter_samples(run_id))

    def iter_samples(self, run_id: int, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Samples by position, fetched in keyset pages so no read transaction stays open long."""
        last: tuple[int, int] | None = None
        while True:
            q = select(SampleRow).where(SampleRow.run_id == run_id)
            if last is not None:
                q = q.where(or_(SampleRow.position > last[0],
                                and_(SampleRow.position == last[0], SampleRow.id > last[1])))
            with self._read() as s:
                page = [_as_dict(x) for x in s.scalars(q.order_by(SampleRow.position, SampleRow.id).limit(batch))]
            yield from page
            if len(page) < batch:
                return
            last = (page[-1]["position"], page[-1]["id"])
