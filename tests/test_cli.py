"""The reading commands (runs, show, export, score), tiny-model and the demo, through `harness.cli.main`."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness.cli import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "m3cot-zero-shot"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    """The demo, reduced: tiny model, both fixture benchmarks, one method, into its own SQLite file."""
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--methods", "direct", "--benches", "m3cot,mmstar", "--n", "6"]) == 0
    return f"sqlite:///{out / 'harness.db'}"


def test_demo_fills_the_database(demo_db, capsys):
    assert main(["runs", "--db", demo_db, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert sorted(r["benchmark"] for r in runs) == ["m3cot", "mmstar"]
    for run in runs:
        assert run["status"] == "finished" and run["metrics"]["n"] == 6
        assert run["official"]["scoring"] == "official" and run["official"]["overall"]["total"] == 6
    mmstar = next(r for r in runs if r["benchmark"] == "mmstar")
    assert "vlmeval" in mmstar["official"], "MMStar is scored by VLMEvalKit's own evaluate"


def test_runs_and_show_print_tables(demo_db, capsys):
    assert main(["runs", "--db", demo_db]) == 0
    table = capsys.readouterr().out
    assert "m3cot" in table and "mmstar" in table and "direct" in table
    assert main(["show", "1", "--db", demo_db]) == 0
    shown = capsys.readouterr().out
    assert "direct" in shown and "library" in shown.lower()
    assert "scores:" in shown and "official" in shown.split("scores:")[1], "each scoring kind is listed"
    assert main(["show", "99", "--db", demo_db]) == 2
    assert "no run 99" in capsys.readouterr().err


def test_export_runs_and_samples(demo_db, tmp_path, capsys):
    assert main(["export", "--db", demo_db, "--out", str(tmp_path / "runs.csv")]) == 0
    with open(tmp_path / "runs.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert main(["export", "--db", demo_db, "--what", "samples", "--out", str(tmp_path / "s.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"prediction", "extracted", "gold", "generated_tokens", "benchmark"} <= set(rows[0])


def test_reading_commands_never_create_a_database(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["runs", "--db", missing]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


@pytest.mark.skipif(not SHARED.exists(), reason=f"the published M3CoT predictions are not at {SHARED}")
def test_score_m3cot_prints_the_official_json(capsys):
    assert main(["score", "m3cot", "--predictions", str(SHARED / "llava-7b" / "cot.jsonl"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["overall"] == {"correct": 829, "total": 2318, "accuracy": 35.76}
    assert result["by_domain"]["mathematics"]["correct"] == 55


def test_score_reports_a_missing_prediction_file_and_unknown_benchmarks(tmp_path, capsys):
    assert main(["score", "m3cot", "--predictions", str(tmp_path / "p.jsonl")]) == 2
    assert "prediction file not found" in capsys.readouterr().err
    assert main(["score", "nope", "--predictions", str(tmp_path / "p.tsv")]) == 2
    assert "choose one of" in capsys.readouterr().err


def test_score_never_unpickles_a_prediction_file(tmp_path, capsys):
    import pickle

    class Boom:  # unpickling this would run code
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    bad = tmp_path / "predictions.pkl"
    bad.write_bytes(pickle.dumps(Boom()))
    from harness.testing.fixtures import write_mmstar_fixture

    data = write_mmstar_fixture(tmp_path / "MMStar.tsv", n=4)
    assert main(["score", "mmstar", "--predictions", str(bad), "--data", str(data)]) == 2
    assert "pickle files are not read" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def test_tiny_model_command_writes_a_loadable_checkpoint(tmp_path, capsys):
    from harness.backbones import load_backbone

    assert main(["tiny-model", "--family", "llava", "--out", str(tmp_path / "m")]) == 0
    backbone = load_backbone(str(tmp_path / "m"))
    assert backbone.family == "llava" and backbone.device.type == "cpu"
    assert sum(p.numel() for p in backbone.model.parameters()) < 2_000_000
