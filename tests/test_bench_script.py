"""Smoke test of scripts/bench_runner.py: it runs and reports every row (timings are not asserted)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_runner.py"


@pytest.mark.slow
def test_bench_runner_quick_json_reports_every_row(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", "--keep", str(tmp_path / "bench")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)

    overhead = result["overhead"]
    assert [row["path"] for row in overhead["rows"]] == [
        "bare model.generate", "harness execute - model load", "harness sample loop only",
        "harness's own model.generate",
    ]
    for row in overhead["rows"]:
        assert row["samples"] == 4 and row["tokens_per_sample"] > 0 and row["seconds_per_sample"] > 0
    assert overhead["rows"][0]["overhead_pct"] is None
    assert all(isinstance(row["overhead_pct"], float) for row in overhead["rows"][1:])
    assert overhead["parameters"] > 0
    assert overhead["checks"]["same_generated_token_counts"] and overhead["checks"]["same_output_texts"]
    assert {b["phase"] for b in overhead["breakdown"]} >= {"model.generate (inside the harness)",
                                                          "DB write (Store.add_samples)"}

    memory = result["memory"]
    assert [row["samples"] for row in memory["rows"]] == [20, 100]
    for row in memory["rows"]:
        assert row["peak_rss_mb"] > 0 and row["wall_s"] > 0 and row["ratio"] > 0
