"""Scores by a published method's own evaluation rule, stored beside the official one (kind "reference")."""
from __future__ import annotations

import json

import pytest

from harness.benchmarks.m3cot import ivt_lr_reference_correct
from harness.cli import main


@pytest.mark.parametrize("text, gold, correct", [
    ("Therefore, the answer is B", "B", True),
    ("the answer is (C). Wait, the answer is B.", "B", True),  # lenient: any occurrence counts
    ("the answer is (C). Wait, the answer is B.", "C", True),
    ("The Answer Is: d", "D", True),
    ("B", "B", False),  # no "the answer is": not counted, unlike the official rule
    ("the answer is Blue", "B", False),  # a word, not a letter
    ("", "A", False),
])
def test_ivt_lr_rule_by_hand(text, gold, correct):
    assert ivt_lr_reference_correct(text, gold) is correct


def test_rescore_reference_adds_a_reference_row_and_leaves_official_alone(tiny_model_dirs, tmp_path, capsys):
    from harness.run.store import Store
    from harness.testing.fixtures import write_all

    data = write_all(tmp_path / "data", n=8, seed=0)
    db = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["run", "--method", "cot", "--bench", "m3cot", "--model", str(tiny_model_dirs["qwen2-vl"]),
                 "--data", str(data["m3cot"]), "--db", db, "--max-new-tokens", "8", "--json", "--no-progress"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    store = Store(db, read_only=True)
    before = store.scores(run_id)
    assert [s["kind"] for s in before] == ["official"]
    assert main(["rescore", str(run_id), "--reference", "--db", db, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = Store(db, read_only=True).samples(run_id)
    expected = sum(ivt_lr_reference_correct(r["prediction"] or "", r["gold"]) for r in rows)
    assert result["scoring"] == "reference" and result["overall"]["correct"] == expected
    assert result["overall"]["total"] == len(rows) == 8
    kinds = sorted(s["kind"] for s in Store(db, read_only=True).scores(run_id))
    assert kinds == ["official", "reference"]
    # a benchmark with no published rule says so in one line
    assert main(["run", "--method", "direct", "--bench", "mmstar", "--model", str(tiny_model_dirs["qwen2-vl"]),
                 "--data", str(data["mmstar"]), "--db", db, "--max-new-tokens", "2", "--json", "--no-progress"]) == 0
    other = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["rescore", str(other), "--reference", "--db", db]) == 2
    assert "no published method's evaluation rule" in capsys.readouterr().err
