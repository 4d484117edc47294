"""Every read the leaderboard makes, as parameterised SQLAlchemy Core queries returning pandas frames.

The database is opened read-only (``Store(url, read_only=True)``: SQLite ``mode=ro``, and
``PRAGMA query_only`` on every connection), so nothing here or in the app can write. User input only
ever reaches SQL as bound parameters; no SQL text comes from the UI.

The main table is long: one row per (finished run × scoring). Scoring kinds (official, judge,
rule-based) are different metrics and never share a row; the kind is a column and a filter.
Reported numbers (``reported_results``) sit beside a measured row only when method, backbone and
benchmark all match (see :mod:`leaderboard.names`); the rest are rows of their own, kind "reported".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable

import pandas as pd
from sqlalchemy import event, func, inspect, or_, select

from harness.run.store import ReportedResult, Run, SampleRow, Score, Store, with_liveness

from .names import backbone_key, backbone_name, benchmark_from_paper, method_from_paper

runs_t, samples_t, scores_t, reported_t = (Run.__table__, SampleRow.__table__, Score.__table__,
                                           ReportedResult.__table__)

KINDS = ("official", "judge", "rule-based", "reference", "reported")

# The main table's columns, in order. "best" columns are marked per (benchmark, kind) group.
COLUMNS = ["run_id", "method", "backbone", "benchmark", "kind", "scorer", "n", "accuracy", "se",
           "reported", "delta", "tokens", "tokens_correct", "reported_tokens_correct", "latent_steps",
           "samples_per_s", "latency_s", "date", "source", "model"]
LABELS = {"run_id": "run", "method": "method", "backbone": "backbone", "benchmark": "benchmark",
          "kind": "kind", "scorer": "scorer", "n": "n", "accuracy": "acc %", "se": "± se",
          "reported": "reported acc %", "delta": "Δ measured−reported", "tokens": "gen tokens",
          "tokens_correct": "gen tokens (correct)", "reported_tokens_correct": "reported tokens (correct)",
          "latent_steps": "latent steps", "samples_per_s": "samples/s", "latency_s": "latency s",
          "date": "date", "source": "source", "model": "model"}
# column → True when higher is better; the best per (benchmark, kind) group is marked.
BEST = {"accuracy": True, "tokens": False, "tokens_correct": False, "samples_per_s": True}

SAMPLE_COLUMNS = ["position", "uid", "category", "prompt", "prediction", "answer", "extracted", "gold",
                  "correct", "error", "generated_tokens", "latent_steps", "latency_s"]


@dataclass(frozen=True)
class Filters:
    """What the main table shows; empty tuples mean "all". Dates filter runs by their start (UTC)."""

    backbones: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    benchmarks: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None  # inclusive
    latest_only: bool = False  # per (method, backbone, benchmark, kind, scorer) the newest run
    include_reported: bool = True

    @staticmethod
    def make(*, backbones=(), methods=(), benchmarks=(), kinds=(), since=None, until=None,
             latest_only=False, include_reported=True) -> "Filters":
        """From loose input (None, a string, lists; dates as ``YYYY-MM-DD``), with one-line errors."""
        def tup(v: Any) -> tuple[str, ...]:
            if v is None or v == "":
                return ()
            return (v,) if isinstance(v, str) else tuple(str(x) for x in v if x not in (None, ""))

        bad = set(tup(kinds)) - set(KINDS)
        if bad:
            raise ValueError(f"unknown scoring kind {sorted(bad)}; choose from {', '.join(KINDS)}")
        return Filters(tup(backbones), tup(methods), tup(benchmarks), tup(kinds), parse_date(since),
                       parse_date(until), bool(latest_only), bool(include_reported))


def parse_date(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"date {value!r} is not YYYY-MM-DD (e.g. 2026-01-31)") from None


def _binomial_se(accuracy: float | None, n: int | None) -> float | None:
    if accuracy is None or not n:
        return None
    p = accuracy / 100.0
    return round(100.0 * math.sqrt(max(p * (1 - p), 0.0) / n), 2)


class LeaderboardDB:
    """Read-only access to a results database for the leaderboard (app, exports, benchmark script)."""

    def __init__(self, url: str | None = None):
        # Store resolves the URL like every other command and, read-only, never creates a file.
        self.store = Store(url, read_only=True)
        self.url = self.store.url
        self.engine = self.store.engine
        if self.engine.dialect.name == "sqlite":
            @event.listens_for(self.engine, "connect")
            def _query_only(dbapi_conn, _record):  # a second lock besides mode=ro
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA query_only=ON")
                cur.close()
        tables = set(inspect(self.engine).get_table_names())
        if "runs" not in tables:
            raise ValueError(f"{self.url} is not a results database (no runs table); "
                             "point --db at the file `harness run` writes")
        # A database written before these tables existed is read as it is: no scores table → the
        # official block stored on each run; no reported table → no reported numbers.
        self.has_scores = "scores" in tables
        self.has_reported = "reported_results" in tables

    def close(self) -> None:
        self.store.close()

    def _frame(self, query) -> pd.DataFrame:
        with self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    # -- main table --------------------------------------------------------------------------------
    def measured(self, filters: Filters = Filters()) -> pd.DataFrame:
        """One row per finished run × scoring, metrics unpacked; filters applied."""
        r = runs_t.c
        cols = [r.id.label("run_id"), r.method, r.model, r.benchmark, r.started_at, r.metrics]
        if self.has_scores:
            s = scores_t.c
            q = (select(*cols, s.kind, s.scorer, s.accuracy, s.details)
                 .join_from(runs_t, scores_t, s.run_id == r.id))
            if filters.kinds:
                q = q.where(s.kind.in_(filters.kinds))
        else:
            q = select(*cols, r.official)
        q = q.where(r.status == "finished")
        if filters.methods:
            q = q.where(r.method.in_(filters.methods))
        if filters.benchmarks:
            q = q.where(r.benchmark.in_(filters.benchmarks))
        if filters.since:
            q = q.where(r.started_at >= datetime.combine(filters.since, datetime.min.time(), timezone.utc))
        if filters.until:
            q = q.where(r.started_at < datetime.combine(filters.until + timedelta(days=1),
                                                        datetime.min.time(), timezone.utc))
        raw = self._frame(q.order_by(r.id))
        rows = [self._measured_row(rec) for rec in raw.to_dict("records")]
        df = pd.DataFrame(rows, columns=COLUMNS)
        if not self.has_scores and filters.kinds:
            df = df[df["kind"].isin(filters.kinds)]
        if filters.backbones:
            keys = {backbone_key(b) for b in filters.backbones}
            df = df[df["backbone"].map(backbone_key).isin(keys)]
        if filters.latest_only and len(df):
            df = df.sort_values("run_id").drop_duplicates(
                ["method", "backbone", "benchmark", "kind", "scorer"], keep="last")
        return df.reset_index(drop=True)

    @staticmethod
    def _measured_row(rec: dict) -> dict:
        m = rec.get("metrics") or {}
        if "kind" in rec:
            kind, scorer, acc, details = rec["kind"], rec["scorer"], rec["accuracy"], rec["details"] or {}
        else:  # database without a scores table
            details = rec.get("official") or {}
            kind = details.get("scoring", "official")
            scorer = details.get("scorer", f"{rec['benchmark']}:official")
            acc = (details.get("overall") or {}).get("accuracy")
        n = (details.get("overall") or {}).get("total") or m.get("n")
        started = rec.get("started_at")
        return {"run_id": int(rec["run_id"]), "method": rec["method"], "backbone": backbone_name(rec["model"]),
                "benchmark": rec["benchmark"], "kind": kind, "scorer": scorer, "n": n,
                "accuracy": None if acc is None else float(acc), "se": _binomial_se(acc, n),
                "tokens": m.get("mean_generated_tokens"), "tokens_correct": m.get("mean_generated_tokens_correct"),
                "latent_steps": m.get("mean_latent_steps"), "samples_per_s": m.get("samples_per_second"),
                "latency_s": m.get("mean_latency_s"),
                "date": started.strftime("%Y-%m-%d %H:%M") if started is not None else None,
                "source": "measured", "model": rec["model"]}

    def reported(self) -> pd.DataFrame:
        """Every imported reported number, with our names where the mapping knows them."""
        cols = ["id", "source", "method", "backbone", "benchmark", "metric", "value", "note", "imported_at"]
        if not self.has_reported:
            return pd.DataFrame(columns=cols + ["our_method", "our_benchmark"])
        t = reported_t.c
        df = self._frame(select(*(t[c] for c in cols)).order_by(t.source, t.method, t.backbone, t.benchmark,
                                                                    t.metric))
        df["our_method"] = [method_from_paper(m) for m in df["method"]]
        df["our_benchmark"] = [benchmark_from_paper(b) for b in df["benchmark"]]
        return df

    def table(self, filters: Filters = Filters()) -> pd.DataFrame:
        """The main table: measured rows with matching reported numbers beside them, then the
        reported numbers that match no measured row (kind "reported")."""
        return _tidy(self._table(filters))

    def _table(self, filters: Filters) -> pd.DataFrame:
        df = self.measured(filters)
        if not (filters.include_reported and self.has_reported):
            return df
        rep = self.reported()
        if rep.empty:
            return df
        rep = rep.assign(bkey=rep["backbone"].map(backbone_key))

        def lookup(metric: str) -> dict[tuple, list[dict]]:
            out: dict[tuple, list[dict]] = {}
            for rec in rep[(rep["metric"] == metric) & rep["our_method"].notna()
                           & rep["our_benchmark"].notna()].to_dict("records"):
                out.setdefault((rec["our_method"], rec["bkey"], rec["our_benchmark"]), []).append(rec)
            return out

        acc, tok = lookup("accuracy"), lookup("tokens_on_correct")
        matched: set[int] = set()
        reported, delta, rep_tokens = [None] * len(df), [None] * len(df), [None] * len(df)
        source = list(df["source"])
        for i, row in enumerate(df[["method", "backbone", "benchmark", "accuracy"]].itertuples(index=False)):
            key = (row.method, backbone_key(row.backbone), row.benchmark)
            recs = acc.get(key)
            if recs:
                matched.update(r["id"] for r in recs)
                reported[i] = recs[0]["value"]
                more = f" (+{len(recs) - 1} more)" if len(recs) > 1 else ""
                source[i] = f"measured; reported: {recs[0]['source']}{more}"
                if row.accuracy is not None and not pd.isna(row.accuracy):
                    delta[i] = round(float(row.accuracy) - float(recs[0]["value"]), 2)
            recs = tok.get(key)
            if recs:
                matched.update(r["id"] for r in recs)
                rep_tokens[i] = recs[0]["value"]
        df = df.assign(reported=reported, delta=delta, reported_tokens_correct=rep_tokens, source=source)

        if filters.kinds and "reported" not in filters.kinds:
            return df
        own = rep[(rep["metric"] == "accuracy") & ~rep["id"].isin(matched)]
        own_tokens = {(r["source"], r["method"], r["backbone"], r["benchmark"]): r["value"]
                      for r in rep[rep["metric"] == "tokens_on_correct"].to_dict("records")}
        backbone_keys = {backbone_key(b) for b in filters.backbones}
        own_rows = []
        for rec in own.to_dict("records"):
            method = rec["our_method"] if isinstance(rec["our_method"], str) else rec["method"]
            bench = rec["our_benchmark"] if isinstance(rec["our_benchmark"], str) else rec["benchmark"]
            if filters.methods and method not in filters.methods:
                continue
            if filters.benchmarks and bench not in filters.benchmarks:
                continue
            if filters.backbones and rec["bkey"] not in backbone_keys:
                continue
            tok_value = own_tokens.get((rec["source"], rec["method"], rec["backbone"], rec["benchmark"]))
            own_rows.append({"run_id": None, "method": method, "backbone": rec["backbone"], "benchmark": bench,
                             "kind": "reported", "scorer": rec["method"], "reported": rec["value"],
                             "reported_tokens_correct": tok_value,
                             "source": f"reported: {rec['source']}" + (f" ({rec['note']})" if rec["note"] else ""),
                             "model": ""})
        if not own_rows:
            return df
        extra = pd.DataFrame(own_rows, columns=COLUMNS)
        return pd.concat([df, extra], ignore_index=True) if len(df) else extra

    def choices(self) -> dict[str, list[str]]:
        """Filter choices: the distinct values stored (runs only; a few hundred rows)."""
        r = runs_t.c
        df = self._frame(select(r.method, r.model, r.benchmark).where(r.status == "finished").distinct())
        backbones = sorted({backbone_name(m) for m in df["model"]}, key=str.lower)
        methods, benches = set(df["method"]), set(df["benchmark"])
        if self.has_reported:
            rep = self.reported()
            backbones = sorted(set(backbones) | set(rep["backbone"]), key=str.lower)
            methods |= {m for m in rep["our_method"] if isinstance(m, str)}
            benches |= {b for b in rep["our_benchmark"] if isinstance(b, str)}
        return {"backbones": backbones, "methods": sorted(methods), "benchmarks": sorted(benches),
                "kinds": list(KINDS)}

    # -- run page ----------------------------------------------------------------------------------
    def runs_list(self) -> pd.DataFrame:
        """Finished and unfinished runs (not superseded), newest first, for the run pickers; a run
        stored as running whose process is gone has status "stale"."""
        r = runs_t.c
        liveness = [r[c] for c in ("updated_at", "owner_host", "owner_pid", "owner_started", "heartbeat_at")
                    if c in self.store.run_columns]  # a database from before these columns lacks some
        df = self._frame(select(r.id, r.status, r.method, r.model, r.benchmark, r.started_at, *liveness)
                         .where(r.status != "superseded").order_by(r.id.desc()))
        df["status"] = [with_liveness(rec)["status"] for rec in df.to_dict("records")]
        df["backbone"] = [backbone_name(m) for m in df["model"]]
        return df[["id", "status", "method", "model", "benchmark", "started_at", "backbone"]]

    def run(self, run_id: int) -> dict[str, Any]:
        cols = [c for c in runs_t.columns if c.name in self.store.run_columns]
        with self.engine.connect() as conn:
            row = conn.execute(select(*cols).where(runs_t.c.id == int(run_id))).mappings().first()
            scores = [] if not self.has_scores else [dict(x) for x in conn.execute(
                select(scores_t).where(scores_t.c.run_id == int(run_id)).order_by(scores_t.c.id)).mappings()]
        if row is None:
            raise KeyError(f"no run {run_id} in {self.url}")
        out = with_liveness({c.name: row.get(c.name) for c in runs_t.columns})
        out["scores"] = scores
        return out

    def categories(self, run: dict[str, Any]) -> pd.DataFrame:
        """Per-category breakdown (from the run's stored metrics, computed over its rows at its end)."""
        by_cat = (run.get("metrics") or {}).get("by_category") or {}
        return pd.DataFrame([{"category": k or "-", **v} for k, v in by_cat.items()],
                            columns=["category", "n", "correct", "accuracy"])

    def _sample_filter(self, q, run_id: int, *, wrong_only: bool, errors_only: bool, category: str | None):
        c = samples_t.c
        q = q.where(c.run_id == int(run_id))
        if wrong_only:
            q = q.where(or_(c.correct.is_(None), c.correct.is_(False)))
        if errors_only:
            q = q.where(c.error.is_not(None))
        if category:
            q = q.where(c.category == category)
        return q

    def samples(self, run_id: int, *, wrong_only: bool = False, errors_only: bool = False,
                category: str | None = None, offset: int = 0, limit: int = 100) -> tuple[pd.DataFrame, int]:
        """One page of a run's rows in data order, and how many rows pass the filters."""
        c = samples_t.c
        flt = dict(wrong_only=wrong_only, errors_only=errors_only, category=category)
        page = self._sample_filter(select(*(c[k] for k in SAMPLE_COLUMNS)), run_id, **flt)
        page = page.order_by(c.position, c.id).offset(max(int(offset), 0)).limit(max(min(int(limit), 1000), 1))
        total = self._sample_filter(select(func.count()).select_from(samples_t), run_id, **flt)
        with self.engine.connect() as conn:
            n = conn.execute(total).scalar_one()
            result = conn.execute(page)
            df = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        return df, int(n)

    def sample_outcomes(self, run_id: int) -> pd.DataFrame:
        """uid → correct / extracted / error for every row of a run (for comparing two runs)."""
        c = samples_t.c
        return self._frame(select(c.uid, c.position, c.category, c.correct, c.extracted, c.gold, c.error)
                           .where(c.run_id == int(run_id)).order_by(c.position))


NUMERIC = ["n", "accuracy", "se", "reported", "delta", "tokens", "tokens_correct", "reported_tokens_correct",
           "latent_steps", "samples_per_s", "latency_s"]


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Numbers as floats (missing: NaN), run ids as nullable integers: sortable in the app."""
    df = df.copy()
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["run_id"] = pd.to_numeric(df["run_id"], errors="coerce").astype("Int64")
    return df


def best_mask(df: pd.DataFrame, columns: Iterable[str] = tuple(BEST)) -> pd.DataFrame:
    """True where a cell holds the best value of its column among measured rows of the same
    (benchmark, kind): accuracy and samples/s highest, generated tokens lowest. Ties all marked."""
    mask = pd.DataFrame(False, index=df.index, columns=df.columns)
    measured = df[df["kind"] != "reported"] if "kind" in df else df
    for col in columns:
        if col not in df:
            continue
        higher = BEST[col]
        for _, group in measured.groupby(["benchmark", "kind"], dropna=False):
            vals = pd.to_numeric(group[col], errors="coerce").dropna()
            if vals.empty:
                continue
            target = vals.max() if higher else vals.min()
            mask.loc[vals.index[vals == target], col] = True
    return mask


def matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Methods × benchmarks: "acc ± se" per cell for the newest run of each (method, backbone, kind,
    scorer); reported numbers in rows of their own, marked "reported"."""
    if table.empty:
        return pd.DataFrame(columns=["method", "backbone", "kind"])
    t = table.copy()
    t["row_kind"] = [k if k != "reported" else s for k, s in zip(t["kind"], t["source"])]
    t = t.sort_values("run_id", na_position="first").drop_duplicates(
        ["method", "backbone", "row_kind", "scorer", "benchmark"], keep="last")

    def cell(rec) -> str:
        if rec["kind"] == "reported":
            return f"{rec['reported']:.1f}"
        if rec["accuracy"] is None or pd.isna(rec["accuracy"]):
            return "-"
        se = "" if rec["se"] is None or pd.isna(rec["se"]) else f" ± {rec['se']:.1f}"
        return f"{rec['accuracy']:.1f}{se}"

    t["cell"] = [cell(rec) for rec in t.to_dict("records")]
    out = t.pivot_table(index=["method", "backbone", "row_kind"], columns="benchmark", values="cell",
                        aggfunc="first", fill_value="")
    out = out.reset_index().rename(columns={"row_kind": "kind"})
    out.columns.name = None
    return out


def matrix_best_mask(mx: pd.DataFrame) -> pd.DataFrame:
    """For :func:`matrix`: the highest accuracy per benchmark column among measured rows of a kind."""
    mask = pd.DataFrame(False, index=mx.index, columns=mx.columns)
    for col in mx.columns[3:]:
        acc = pd.to_numeric(mx[col].astype(str).str.split(" ").str[0], errors="coerce")
        for kind, group in mx.groupby("kind"):
            if str(kind).startswith("reported"):
                continue
            vals = acc[group.index].dropna()
            if len(vals):
                mask.loc[vals.index[vals == vals.max()], col] = True
    return mask
