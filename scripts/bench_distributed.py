#!/usr/bin/env python
"""Data-parallel evaluation: samples/s with 1, 2, ... processes on this machine, and whether every
process count stored the same predictions. It measures and prints; it never asserts timings.

Each configuration is ``harness run --method M --bench easyvqa --model zoo:easyvqa-llava --limit N
--processes P`` into a fresh SQLite file, as a child process. Two times are reported: the whole command
(start-up, model load, torchrun) and the run itself (the run row's started_at → finished_at: the sample
loop, the writes and the final scoring, after the model is loaded). CPU threads are shared out
(``OMP_NUM_THREADS`` = cores / P), so on a 2-core laptop two processes mostly trade intra-op threads for
processes; the point here is the mechanism and the invariance, on GPUs each process has its own device.

    .venv/bin/python scripts/bench_distributed.py [--method cot] [--limit 96] [--processes 1,2] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path


def one(method: str, limit: int, processes: int, batch: int, db: Path) -> dict:
    command = [sys.executable, "-m", "harness.cli", "run", "--method", method, "--bench", "easyvqa",
               "--model", "zoo:easyvqa-llava", "--limit", str(limit), "--batch-size", str(batch),
               "--processes", str(processes), "--no-progress", "--db", f"sqlite:///{db}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)
    began = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    with sqlite3.connect(db) as conn:
        started, finished = conn.execute("SELECT started_at, finished_at FROM runs").fetchone()
        rows = conn.execute("SELECT position, prediction FROM samples ORDER BY position").fetchall()
    loop = (datetime.fromisoformat(str(finished)) - datetime.fromisoformat(str(started))).total_seconds()
    return {"wall": wall, "loop": loop, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="cot")
    ap.add_argument("--limit", type=int, default=96)
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    counts = [int(p) for p in args.processes.split(",")]
    # A count may repeat (1,2,1,2: interleaved repeats show how much a loaded machine moves the numbers);
    # each run gets its own database, or a repeat would resume the earlier run and compute nothing.
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, p in enumerate(counts):
            results.append(one(args.method, args.limit, p, args.batch_size, Path(tmp) / f"{i}-p{p}.db"))
    base = results[0]
    print(f"{args.method} on easyvqa (zoo:easyvqa-llava), {args.limit} samples, batch {args.batch_size}, "
          f"{os.cpu_count()} cores")
    print(f"| processes | command s | run s | samples/s (run) | vs {counts[0]} | same predictions |")
    print("|---|---|---|---|---|---|")
    for p, r in zip(counts, results):
        rate = args.limit / r["loop"] if r["loop"] > 0 else float("nan")
        base_rate = args.limit / base["loop"] if base["loop"] > 0 else float("nan")
        print(f"| {p} | {r['wall']:.1f} | {r['loop']:.1f} | {rate:.2f} | {rate / base_rate:.2f}x | "
              f"{'yes' if r['rows'] == base['rows'] else 'NO'} |")


if __name__ == "__main__":
    main()
