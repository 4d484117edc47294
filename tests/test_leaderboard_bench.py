"""Smoke test of the leaderboard speed script (small numbers; the script itself prints timings and
never asserts them)."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_leaderboard.py"


@pytest.mark.slow
def test_bench_leaderboard_smoke(tmp_path):
    db = tmp_path / "bench.db"
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", "6", "--samples", "600", "--repeats", "2",
                          "--db", str(db), "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    names = [r["query"] for r in result["results"]]
    assert names[:2] == ["main table", "main table (filtered)"] and "run page" in names
    by_name = {r["query"]: r for r in result["results"]}
    assert by_name["run page"]["rows"] == 50 and by_name["run page (page 40)"]["rows"] == 0  # 100 rows per run
    assert all(r["median_ms"] > 0 for r in result["results"])
    con = sqlite3.connect(db)
    counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "samples")]
    con.close()
    assert counts == [6, 600]
    # the script refuses to overwrite an existing file
    again = subprocess.run([sys.executable, str(SCRIPT), "--runs", "6", "--samples", "600", "--db", str(db)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr
