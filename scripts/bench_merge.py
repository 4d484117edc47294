#!/usr/bin/env python
"""`harness merge` at scale: two SQLite databases of N sample rows each (the disjoint shards of one
run, written by Core inserts) merged into a new one, then merged again (every row compared, nothing
written). It measures and prints; it never asserts timings.

    .venv/bin/python scripts/bench_merge.py [--rows 100000]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from harness.run.merge import _insert_rows, merge
from harness.run.store import Run, Store, utcnow

def write_shard_databases(folder: str | Path, n_rows: int = 100_000, n_shards: int = 2) -> list[str]:
    """``n_shards`` SQLite files of ``n_rows`` rows each: the disjoint shares of one run (status "partial",
    n_planned = n_rows * n_shards, an unregistered benchmark so no data is read), written by Core inserts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    total = n_rows * n_shards
    subset = {"limit": None, "seed": 0, "n": total, "of": total, "data": None,
              "positions_sha": hashlib.sha256(json.dumps(list(range(total))).encode()).hexdigest()[:16]}
    fields = {"key": "bench-merge-" + "0" * 52, "status": "partial", "method": "cot", "model": "bench/model",
              "benchmark": "bench-merge", "split": "test", "subset": subset, "n_planned": total,
              "method_config": {}, "library_versions": {}, "started_at": utcnow(), "updated_at": utcnow(),
              "peak_memory_mb": 1000.0}
    urls = []
    for shard in range(n_shards):
        url = f"sqlite:///{folder / f'node{shard}.db'}"
        store = Store(url, heartbeat_s=0)
        try:
            def tx(s, shard=shard):
                run_id = s.execute(insert(Run.__table__).values(**fields)).inserted_primary_key[0]
                rows = [{"uid": f"test-{p}", "position": p, "category": ("yes/no", "shape", "colour")[p % 3],
                         "prompt": f"Question: is there a shape number {p}?", "prediction": f"The answer is {p % 2}.",
                         "answer": f"The answer is {p % 2}.", "extracted": str(p % 2), "gold": "0",
                         "correct": p % 2 == 0, "input_tokens": 60, "generated_tokens": 12, "latent_steps": None,
                         "latency_s": 0.01, "extra": {"mode": "text"}, "created_at": utcnow()}
                        for p in range(shard, total, n_shards)]
                _insert_rows(s, run_id, rows)
            store._write(tx)
        finally:
            store.close()
        urls.append(url)
    return urls


def time_merge(folder: str | Path, n_rows: int = 100_000) -> dict[str, float]:
    """Seconds to merge two databases of ``n_rows`` rows each into a new one, and to merge them again
    (every row compared, nothing written)."""
    folder = Path(folder)
    sources = write_shard_databases(folder, n_rows)
    into = f"sqlite:///{folder / 'merged.db'}"
    began = time.perf_counter()
    merge(sources, into)
    first = time.perf_counter() - began
    began = time.perf_counter()
    merge(sources, into)
    return {"rows": 2 * n_rows, "merge_s": round(first, 2), "again_s": round(time.perf_counter() - began, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows per database")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = time_merge(tmp, args.rows)
    print("| rows in all | merge into a new database | the same merge again |")
    print("|---|---|---|")
    print(f"| {result['rows']:,} | {result['merge_s']} s | {result['again_s']} s |")


if __name__ == "__main__":
    main()
