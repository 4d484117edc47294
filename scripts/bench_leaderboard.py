#!/usr/bin/env python
"""Speed of the leaderboard's queries on a large results database. It measures and prints; it never
asserts timings.

Fills a SQLite file with ``--runs`` finished runs (methods × backbones × benchmarks, each with its
metrics and an official score; every fourth also a judge score) and ``--samples`` sample rows spread
evenly over them, through the store's own schema (``Store(url)`` creates tables and indexes) and bulk
``executemany`` inserts in large transactions. The 235 reported numbers of the shared paper CSV are
imported when the file is there. Then it times, each as the median of ``--repeats`` calls on a warm
connection pool:

* main table: ``LeaderboardDB.table(Filters())`` (runs × scores, metrics unpacked, reported numbers
  matched and appended; it never reads the samples table: run-level aggregates are stored with each
  run at its end), and the same with a method and kind filter;
* run page: what the Run tab loads for a run in the middle of the file: configuration, scores and the
  per-category breakdown (``run_page``) plus the first page of its samples and their count
  (``sample_page``), and the same for the "wrong only" filter and for page 40;
* compare: two runs' outcomes joined on uid, McNemar and a 10,000-resample paired bootstrap;
* ``harness runs`` (``Store.runs()``, which counts each run's stored rows), for reference.

    .venv/bin/python scripts/bench_leaderboard.py [--runs 200] [--samples 1000000] [--db PATH] [--json]
"""
from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = {"main table": 0.300, "main table (filtered)": 0.300, "run page": 1.0,
           "run page (wrong only)": 1.0, "run page (page 40)": 1.0}
PAPER_CSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper_results.csv"
METHODS = ["direct", "cot", "mm-cot", "ivt-lr", "l2v-cot"]
BACKBONES = ["Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct", "llava-hf/llava-1.5-7b-hf",
             "Qwen/Qwen2.5-VL-3B-Instruct"]
BENCHES = ["m3cot", "mmstar", "mathvista", "mmbench", "pope", "scienceqa", "mmvp", "mathverse", "m3cot", "mmstar"]
CATEGORIES = ["science", "commonsense", "mathematics", "perception", "reasoning", "math"]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fill(path: Path, n_runs: int, n_samples: int, seed: int = 0) -> dict:
    """Create the schema through Store, then bulk-insert runs, scores and samples."""
    from harness.run.store import Store

    Store(f"sqlite:///{path}").close()  # tables + indexes exactly as the harness makes them
    rng = random.Random(seed)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    per_run = [n_samples // n_runs + (1 if i < n_samples % n_runs else 0) for i in range(n_runs)]
    t0 = time.perf_counter()
    start = datetime(2025, 1, 1)
    runs, scores = [], []
    for i in range(n_runs):
        method, model = METHODS[i % len(METHODS)], BACKBONES[(i // len(METHODS)) % len(BACKBONES)]
        bench = BENCHES[(i // (len(METHODS) * len(BACKBONES))) % len(BENCHES)]
        n = per_run[i]
        p = rng.uniform(0.2, 0.8)
        cats = {c: {"n": n // len(CATEGORIES), "correct": int(p * n // len(CATEGORIES)), "accuracy": round(100 * p, 2)}
                for c in CATEGORIES}
        metrics = {"n": n, "n_errors": n // 200, "correct": int(p * n), "accuracy": round(100 * p, 2),
                   "accuracy_se": round(100 * (p * (1 - p) / max(n, 1)) ** 0.5, 4),
                   "mean_generated_tokens": round(rng.uniform(5, 400), 2),
                   "mean_generated_tokens_correct": round(rng.uniform(5, 400), 2), "mean_input_tokens": 300.0,
                   "mean_latent_steps": float(rng.choice([0, 0, 4, 8])), "samples_per_second": round(rng.uniform(1, 40), 3),
                   "mean_latency_s": round(rng.uniform(0.02, 2), 4), "wall_seconds": 100.0, "by_category": cats}
        when = (start + timedelta(hours=6 * i)).isoformat(sep=" ")
        runs.append((i + 1, f"key{i}", "finished", method, json.dumps({"max_new_tokens": 512}), model, "main",
                     "qwen2-vl", bench, "test", json.dumps({"limit": None, "seed": 0, "n": n}), f"fp{i % 10}",
                     n, "0.1.0", "abc123", json.dumps({"torch": "2.x"}), "cuda:0", "bfloat16", 0, 8, when, when, when,
                     json.dumps(metrics), json.dumps({"scoring": "official", "overall": {"accuracy": metrics["accuracy"],
                                                                                           "total": n}}), 1000.0, None))
        scores.append((i + 1, "official", f"{bench}:official", metrics["accuracy"],
                       json.dumps({"overall": {"accuracy": metrics["accuracy"], "total": n}}), when))
        if i % 4 == 0:
            acc = round(metrics["accuracy"] + rng.uniform(-3, 3), 2)
            scores.append((i + 1, "judge", "judge:some-llm", acc, json.dumps({"overall": {"accuracy": acc, "total": n}}),
                           when))
    with con:
        con.executemany("INSERT INTO runs (id, key, status, method, method_config, model, model_revision, "
                        "backbone_family, benchmark, split, subset, data_fingerprint, n_planned, harness_version, "
                        "git_commit, library_versions, device, dtype, seed, batch_size, started_at, updated_at, "
                        "finished_at, metrics, official, peak_memory_mb, error) VALUES "
                        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
        con.executemany("INSERT INTO scores (run_id, kind, scorer, accuracy, details, created_at) "
                        "VALUES (?,?,?,?,?,?)", scores)
    prompt = ("Question: which of the options is shown in the image? Options: (A) a red circle "
              "(B) a blue square (C) a green triangle (D) a yellow star")
    sql = ("INSERT INTO samples (run_id, uid, position, category, prompt, prediction, answer, extracted, gold, "
           "correct, error, input_tokens, generated_tokens, latent_steps, latency_s, extra, created_at) "
           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    for i in range(n_runs):
        rows = []
        for pos in range(per_run[i]):
            correct = rng.random() < 0.5
            letter = "ABCD"[pos % 4]
            error = "BadImage: cannot decode image" if pos % 200 == 7 else None
            rows.append((i + 1, f"u{pos}", pos, CATEGORIES[pos % len(CATEGORIES)], prompt,
                         f"Let me think. The image shows a shape. The answer is ({letter}).", f"({letter})", letter,
                         letter if correct else "ABCD"[(pos + 1) % 4], correct and error is None, error, 300,
                         40 + pos % 50, 0, 0.05, "{}", runs[i][20]))
        with con:
            con.executemany(sql, rows)
    con.execute("ANALYZE")
    con.close()
    reported = 0
    if PAPER_CSV.is_file():
        from leaderboard.paper_results import import_csv

        reported = import_csv(PAPER_CSV, f"sqlite:///{path}")["added"]
    return {"seconds": time.perf_counter() - t0, "reported": reported}


def median_time(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm: connection pool, imports
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def measure(path: Path, repeats: int) -> list[dict]:
    from harness.run.store import Store
    from leaderboard.app import run_page, sample_page
    from leaderboard.compare import compare_runs
    from leaderboard.queries import Filters, LeaderboardDB

    db = LeaderboardDB(f"sqlite:///{path}")
    mid = int(db.runs_list()["id"].median())
    rows = []

    def add(name, fn, note=""):
        seconds, out = median_time(fn, repeats)
        rows.append({"query": name, "median_ms": round(1000 * seconds, 1),
                     "target_ms": round(1000 * TARGETS[name]) if name in TARGETS else None,
                     "rows": out if isinstance(out, int) else None, "note": note})
        say(f"  {name}: {1000 * seconds:.1f} ms")

    add("main table", lambda: len(db.table(Filters())), "all runs × scores + reported rows")
    add("main table (filtered)", lambda: len(db.table(Filters.make(methods=["cot", "ivt-lr"], kinds=["official"]))),
        "method + kind filter")

    def page(wrong=False, number=1):
        run_page(db, mid)
        df, _ = sample_page(db, mid, wrong, False, None, number)
        return len(df)

    add("run page", lambda: page(), f"run {mid}: config, scores, categories, 50 samples + count")
    add("run page (wrong only)", lambda: page(wrong=True), "same, wrong answers only")
    add("run page (page 40)", lambda: page(number=40), "same, rows 1951-2000")
    add("compare two runs", lambda: compare_runs(db, mid, mid + 1)["summary"]["shared"],
        "uid join, McNemar, 10,000-resample bootstrap")
    store = Store(f"sqlite:///{path}", read_only=True)
    add("harness runs (Store.runs)", lambda: len(store.runs()), "counts every run's sample rows")
    store.close()
    db.close()
    return rows


def print_table(rows: list[dict], header: str) -> None:
    print(header)
    cols = ["query", "median ms", "target ms", "ok", "rows", "note"]
    table = [[r["query"], f"{r['median_ms']:.1f}", "-" if r["target_ms"] is None else str(r["target_ms"]),
              "-" if r["target_ms"] is None else ("yes" if r["median_ms"] <= r["target_ms"] else "NO"),
              "-" if r["rows"] is None else str(r["rows"]), r["note"]] for r in rows]
    widths = [max(len(x[i]) for x in [cols] + table) for i in range(len(cols))]
    for line in [cols] + table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--db", help="SQLite file to create (default: a temporary file, removed at the end)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.samples < args.runs:
        parser.error("need at least 2 runs and one sample per run")
    tmp = None
    if args.db:
        path = Path(args.db)
        if path.exists():
            parser.error(f"{path} exists; the script fills a new file (remove it or pick another --db)")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-leaderboard-")
        path = Path(tmp.name) / "bench.db"
    try:
        say(f"filling {path}: {args.runs} runs, {args.samples} samples ...")
        filled = fill(path, args.runs, args.samples)
        size_mb = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
        say(f"  filled in {filled['seconds']:.1f} s ({size_mb:.0f} MB); timing ...")
        rows = measure(path, args.repeats)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print(json.dumps({"runs": args.runs, "samples": args.samples, "db_mb": round(size_mb), "results": rows},
                         indent=2))
    else:
        print_table(rows, f"leaderboard queries: {args.runs} runs, {args.samples:,} samples, {size_mb:.0f} MB "
                          f"SQLite, median of {args.repeats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
