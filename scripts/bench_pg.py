#!/usr/bin/env python
"""The leaderboard's queries on PostgreSQL beside SQLite, on the same data. It measures and prints;
it never asserts timings.

Starts a throwaway PostgreSQL server (tests/pg_server.py: PostgreSQL's binaries on PATH or in
/usr/lib/postgresql/*/bin, and psycopg) unless ``--url`` names an empty database, and makes a SQLite
file beside it. Both get the store's own schema (``Store(url)``), then the same ``--runs`` finished runs
(each with metrics and an official score) and ``--samples`` sample rows spread evenly over them,
bulk-inserted with SQLAlchemy Core in large transactions, then ``ANALYZE`` (PostgreSQL: ``VACUUM
ANALYZE``, as autovacuum would leave it). Then, each as the median of ``--repeats`` calls on a warm
connection pool of a read-only ``LeaderboardDB``:

* main table: ``LeaderboardDB.table(Filters())`` (runs × scores; never reads the samples table);
* run list: ``LeaderboardDB.runs_list()`` (the run pickers);
* run page: ``LeaderboardDB.run`` + ``samples`` for a run in the middle: the first page of 50 rows and
  the count, the "wrong only" filter, page 40;
* ``harness runs``: ``Store.runs()`` (counts each run's rows over the (run_id) index).

    .venv/bin/python scripts/bench_pg.py [--runs 200] [--samples 1000000] [--repeats 7] [--url URL] [--json]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # pg_server

METHODS = ["direct", "cot", "mm-cot", "ivt-lr", "l2v-cot"]
BACKBONES = ["Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct", "llava-hf/llava-1.5-7b-hf",
             "Qwen/Qwen2.5-VL-3B-Instruct"]
BENCHES = ["m3cot", "mmstar", "mathvista", "mmbench", "pope", "scienceqa", "mmvp", "mathverse"]
CATEGORIES = ["science", "commonsense", "mathematics", "perception", "reasoning", "math"]
PROMPT = ("Question: which of the options is shown in the image? Options: (A) a red circle "
          "(B) a blue square (C) a green triangle (D) a yellow star")
PAGE = 50


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fill(url: str, n_runs: int, n_samples: int, seed: int = 0) -> float:
    """Schema through Store, then runs, scores and samples with Core executemany; returns seconds."""
    from sqlalchemy import create_engine, insert, text

    from harness.run.store import Run, SampleRow, Score, Store

    Store(url).close()
    engine = create_engine(url)
    rng = random.Random(seed)
    per_run = [n_samples // n_runs + (1 if i < n_samples % n_runs else 0) for i in range(n_runs)]
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    t0 = time.perf_counter()
    runs, scores, when = [], [], []
    for i in range(n_runs):
        n, p = per_run[i], rng.uniform(0.2, 0.8)
        bench = BENCHES[(i // (len(METHODS) * len(BACKBONES))) % len(BENCHES)]
        at = start + timedelta(hours=6 * i)
        when.append(at)
        metrics = {"n": n, "correct": int(p * n), "accuracy": round(100 * p, 2),
                   "mean_generated_tokens": round(rng.uniform(5, 400), 2), "samples_per_second": 10.0,
                   "by_category": {c: {"n": n // 6, "correct": int(p * n // 6), "accuracy": round(100 * p, 2)}
                                   for c in CATEGORIES}}
        runs.append({"id": i + 1, "key": f"key{i}", "status": "finished", "method": METHODS[i % len(METHODS)],
                     "method_config": {"max_new_tokens": 512}, "model": BACKBONES[(i // len(METHODS)) % len(BACKBONES)],
                     "benchmark": bench, "split": "test", "subset": {"seed": 0, "n": n}, "n_planned": n,
                     "started_at": at, "updated_at": at, "finished_at": at, "metrics": metrics,
                     "official": {"scoring": "official", "overall": {"accuracy": metrics["accuracy"], "total": n}}})
        scores.append({"run_id": i + 1, "kind": "official", "scorer": f"{bench}:official",
                       "accuracy": metrics["accuracy"], "details": {"overall": {"total": n}}, "created_at": at})
    with engine.begin() as conn:
        conn.execute(insert(Run.__table__), runs)
        conn.execute(insert(Score.__table__), scores)
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequence past them
            conn.execute(text("SELECT setval('runs_id_seq', (SELECT max(id) FROM runs))"))
    for i in range(n_runs):
        batch = []
        for pos in range(per_run[i]):
            correct = rng.random() < 0.5
            letter = "ABCD"[pos % 4]
            error = "BadImage: cannot decode image" if pos % 200 == 7 else None
            batch.append({"run_id": i + 1, "uid": f"u{pos}", "position": pos, "category": CATEGORIES[pos % 6],
                          "prompt": PROMPT, "prediction": f"Let me think. The answer is ({letter}).",
                          "answer": f"({letter})", "extracted": letter,
                          "gold": letter if correct else "ABCD"[(pos + 1) % 4], "correct": correct and error is None,
                          "error": error, "input_tokens": 300, "generated_tokens": 40 + pos % 50, "latent_steps": 0,
                          "latency_s": 0.05, "extra": {}, "created_at": when[i]})
        with engine.begin() as conn:
            conn.execute(insert(SampleRow.__table__), batch)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - t0


def median_ms(fn, repeats: int) -> float:
    fn()  # warm: pool, caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 1)


def measure(url: str, repeats: int) -> dict[str, float]:
    from harness.run.store import Store
    from leaderboard.queries import Filters, LeaderboardDB

    db = LeaderboardDB(url)
    mid = int(db.runs_list()["id"].median())
    store = Store(url, read_only=True)
    out = {
        "main table": median_ms(lambda: db.table(Filters()), repeats),
        "main table (filtered)": median_ms(lambda: db.table(Filters.make(methods=["cot"], kinds=["official"])), repeats),
        "run list": median_ms(db.runs_list, repeats),
        "run page: page 1 + count": median_ms(lambda: (db.run(mid), db.samples(mid, limit=PAGE)), repeats),
        "run page: wrong only": median_ms(lambda: db.samples(mid, wrong_only=True, limit=PAGE), repeats),
        "run page: page 40": median_ms(lambda: db.samples(mid, offset=39 * PAGE, limit=PAGE), repeats),
        "harness runs (Store.runs)": median_ms(store.runs, repeats),
    }
    for name, ms in out.items():
        say(f"  {name}: {ms} ms")
    store.close()
    db.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--url", help="an empty PostgreSQL database to fill (default: start a throwaway server)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.samples < args.runs:
        parser.error("need at least 2 runs and one sample per run")
    server = None
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        try:
            pg_url = args.url
            if pg_url is None:
                import pg_server

                server = pg_server.start()
                pg_url = server.create_database("bench", "bench", "bench-pw")
            results, fills = {}, {}
            for name, url in (("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}"), ("postgresql", pg_url)):
                say(f"{name}: filling {args.runs} runs, {args.samples:,} samples")
                fills[name] = round(fill(url, args.runs, args.samples), 1)
                say(f"  filled in {fills[name]} s")
                results[name] = measure(url, args.repeats)
        finally:
            if server is not None:
                server.stop()
    if args.json:
        print(json.dumps({"runs": args.runs, "samples": args.samples, "fill_s": fills, "median_ms": results}, indent=2))
        return 0
    print(f"{args.runs} runs, {args.samples:,} samples; median of {args.repeats} (ms); fill: "
          f"SQLite {fills['sqlite']} s, PostgreSQL {fills['postgresql']} s")
    width = max(map(len, results["sqlite"]))
    print(f"{'query'.ljust(width)}  {'SQLite':>9}  {'PostgreSQL':>10}")
    for name in results["sqlite"]:
        print(f"{name.ljust(width)}  {results['sqlite'][name]:>9}  {results['postgresql'][name]:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
