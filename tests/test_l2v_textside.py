"""L2V-CoT's text side (lm-eval over local tasks, steered and unsteered) and the LAT analysis."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from methods.l2v_cot.analyze import figures, low_frequency_share  # noqa: E402
from methods.l2v_cot.extract import DEFAULT_PAIRS, extract  # noqa: E402
from methods.l2v_cot.textside import TASKS_DIR, BackboneText, TextGenerator, cut_at_stops, evaluate  # noqa: E402


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    from harness.backbones.tiny import write_tiny_model

    return write_tiny_model("qwen2", tmp_path_factory.mktemp("llm") / "qwen2", hidden_size=48, layers=2)


@pytest.fixture(scope="module")
def vector_file(llm_dir, tmp_path_factory):
    path, _ = extract(str(llm_dir), DEFAULT_PAIRS, [1], tmp_path_factory.mktemp("vec") / "v.safetensors", n=6,
                      device="cpu", dtype="float32")
    return path


class Oracle(TextGenerator):
    """Answers the local task's questions from its data file: right on even ids, wrong on odd ones."""

    def __init__(self):
        super().__init__()
        self.answers = {}
        with open(TASKS_DIR / "l2v_arith.jsonl") as fh:
            for line in fh:
                row = json.loads(line)
                self.answers[row["question"]] = (row["id"], row["answer"])
        self.seen = []

    def _generate(self, contexts, max_new_tokens):
        out = []
        for context in contexts:
            self.seen.append((context, max_new_tokens))
            (qid, answer), = [v for q, v in self.answers.items() if q in context]
            out.append(f" {answer if qid % 2 == 0 else int(answer) + 1}\nQuestion: spill over")
        return out


def test_lm_eval_scores_generate_until_tasks_from_local_yaml():
    oracle = Oracle()
    scores = evaluate(oracle, ["l2v_arith"], limit=8)
    result = scores["l2v_arith"]
    assert result["n"] == 8 and result["metrics"]["exact_match,first-number"] == pytest.approx(0.5)
    context, max_toks = oracle.seen[0]
    assert context.startswith("Question: ") and context.endswith("Answer:") and max_toks == 16


def test_stop_strings_cut_the_generation():
    assert cut_at_stops("12\nQuestion: next", ["\n"]) == "12"
    assert cut_at_stops("a b. Question: c", ["Question:", "b"]) == "a "
    assert cut_at_stops("no stop", []) == "no stop"


def test_textside_lm_is_the_backbone_with_and_without_the_injection(backbone, vector_file):
    from methods.l2v_cot.method import transferred_direction
    from methods.l2v_cot.textside import Steer, harness_lm_class
    from methods.l2v_cot.vectors import load_directions

    class Request:
        def __init__(self, context, until):
            self.args = (context, {"until": until, "max_gen_toks": 6})

    requests = [Request("Question: 1 + 1?\nAnswer:", ["\n"]), Request("Question: What colour?", ["zzz"])]
    plain = harness_lm_class()(BackboneText(backbone), batch_size=2).generate_until(requests)
    expected = [cut_at_stops(g.text, r.args[1]["until"]) for g, r in
                zip(backbone.generate([[], []], [r.args[0] for r in requests], 6), requests)]
    assert plain == expected
    direction = transferred_direction(load_directions(vector_file), 1, backbone.hidden_size, 10, "lmn")
    steered_lm = harness_lm_class()(BackboneText(backbone, Steer(direction, 0, 50.0, "all")), batch_size=2)
    assert steered_lm.generate_until(requests) != plain
    assert harness_lm_class()(BackboneText(backbone), batch_size=1).generate_until(requests) == plain, \
        "hooks are gone after the steered evaluation"
    with pytest.raises(NotImplementedError, match="generate_until"):
        steered_lm.loglikelihood(requests)


def test_textside_command_stores_linked_rows(llm_dir, tiny_model_dirs, vector_file, tmp_path, capsys):
    from harness.cli import main
    from harness.run.store import Store
    from harness.api.hashing import file_sha256

    db = f"sqlite:///{tmp_path / 'h.db'}"
    model = str(tiny_model_dirs["llava"])
    assert main(["l2v", "textside", "--model", model, "--vector", str(vector_file), "--cutoff", "10", "--limit", "3",
                 "--alpha", "0.7", "--db", db, "--device", "cpu"]) == 0
    assert main(["l2v", "textside", "--model", str(llm_dir), "--limit", "3", "--db", db, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "exact_match,first-number" in out
    rows = Store(db, read_only=True).text_metrics(task="l2v_arith")
    vlm_rows = [r for r in rows if r["model"] == model]
    assert sorted(r["steered"] for r in vlm_rows) == [False, True]
    assert {r["vector_sha"] for r in vlm_rows} == {file_sha256(vector_file)}
    steered = next(r for r in vlm_rows if r["steered"])
    assert steered["alpha"] == 0.7 and steered["layer"] == 1 and steered["n"] == 3  # last of 2 → last of 2
    (llm_row,) = [r for r in rows if r["model"] == str(llm_dir)]
    assert not llm_row["steered"] and llm_row["vector_sha"] is None and 0.0 <= llm_row["value"] <= 1.0


# -- LAT analysis ------------------------------------------------------------------------------
def test_low_frequency_share_of_pure_tones():
    n = 64
    x = torch.arange(n, dtype=torch.float64)
    tones = torch.stack([torch.cos(2 * math.pi * 3 * x / n), torch.sin(2 * math.pi * 20 * x / n)])
    assert low_frequency_share(tones[:1], 5) == pytest.approx(1.0)
    assert low_frequency_share(tones[1:], 5) == pytest.approx(0.0, abs=1e-12)
    assert low_frequency_share(tones, 5) == pytest.approx(0.5)
    noise = torch.randn(50, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert low_frequency_share(noise, n // 2) == pytest.approx(1.0)


def test_dispersion_figures_match_numpy():

    U = torch.randn(30, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    f = figures(U, 5)
    assert f["dispersion"] == pytest.approx(np.trace(np.cov(U.numpy().T)))
    spectrum = np.fft.fft(U.numpy(), axis=-1)
    keep = np.zeros(48, dtype=bool)
    keep[:6] = True
    keep[-5:] = True
    low = np.fft.ifft(spectrum * keep, axis=-1).real
    assert f["dispersion_lowpass"] == pytest.approx(np.trace(np.cov(low.T)))
    assert f["dispersion_lowpass"] < f["dispersion"]


def test_analyze_command_prints_and_stores_the_dispersions(llm_dir, tiny_model_dirs, tmp_path, capsys):
    from harness.cli import main
    from harness.run.store import Store

    db = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["l2v", "analyze", "--llm", str(llm_dir), "--vlm", str(tiny_model_dirs["qwen2-vl"]), "--n", "8",
                 "--cutoff", "6", "--db", db, "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 8 and result["contrast"] == "prompt"
    assert result["llm"]["width"] == 48 and result["vlm"]["width"] == 64
    rows = {r["metric"]: r for r in Store(db, read_only=True).text_metrics(task="lat-analysis")}
    for name in ("dispersion_llm", "dispersion_llm_lowpass", "dispersion_vlm", "dispersion_vlm_lowpass"):
        assert rows[name]["value"] > 0
    assert rows["dispersion_vlm"]["value"] == pytest.approx(result["vlm"]["dispersion"])
    assert rows["dispersion_vlm_lowpass"]["value"] < rows["dispersion_vlm"]["value"]
    assert main(["l2v", "analyze", "--llm", str(llm_dir), "--vlm", str(tiny_model_dirs["qwen2-vl"]),
                 "--db", db, "--device", "cpu"]) == 2
    assert "pass --cutoff below 24" in capsys.readouterr().err
