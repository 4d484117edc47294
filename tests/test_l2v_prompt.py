"""The prompt `l2v-cot` hands the backbone (`--prompt vlmeval|direct`), recorded where the backbone turns it
into model inputs (``Backbone.build_inputs``) and compared with text written out here by hand; the CLI option,
its errors and the stored configuration (a `--prompt direct` run keeps the key runs had before the option)."""
from __future__ import annotations

import base64
import io

import pytest
import torch

from harness.api import Query
from harness.backbones.base import Backbone
from methods.l2v_cot.method import L2VCoT
from methods.l2v_cot.vectors import save_directions

# A hand-made MCQ sample as VLMEvalKit's ImageMCQDataset.build_prompt writes it (hint, question, lettered
# options, its closing sentence with the trailing space and newline), and an open question.
MCQ = ("Hint: Look at the picture.\nQuestion: Which colour is the circle?\nOptions:\nA. red\nB. blue\n"
       "Please select the correct answer from the options above. \n")
OPEN = "Question: How many circles are there?"
DIRECT_MCQ = MCQ + "\nAnswer with the option's letter from the given choices directly."
DIRECT_OPEN = OPEN + "\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vec") / "v.safetensors"
    g = torch.Generator().manual_seed(0)
    save_directions(path, {1: torch.randn(4, 48, generator=g)},
                    {"model": "llm", "num_layers": 2, "hidden_size": 48, "n": 4, "contrast": "still2",
                     "data_sha256": "0"})
    return path


@pytest.fixture
def recorded(monkeypatch):
    """Every prompt list ``Backbone.build_inputs`` receives (what the chat template wraps and the model reads)."""
    calls: list[list[str]] = []
    original = Backbone.build_inputs

    def build_inputs(self, images, prompts):
        calls.append(list(prompts))
        return original(self, images, prompts)

    monkeypatch.setattr(Backbone, "build_inputs", build_inputs)
    return calls


@pytest.mark.parametrize("setting, expected", [("vlmeval", [MCQ, OPEN]), ("direct", [DIRECT_MCQ, DIRECT_OPEN])])
def test_the_backbone_receives_the_benchmark_prompt_as_is_or_with_the_direct_instruction(
        backbone, vector_file, images, recorded, setting, expected):
    queries = [Query(images=images[0], question=MCQ, choices=["red", "blue"]),
               Query(images=images[1], question=OPEN, choices=[])]
    method = L2VCoT(vector=str(vector_file), cutoff=8, alpha=0.5, prompt=setting, max_new_tokens=2)
    outputs = method(backbone, queries)
    assert recorded == [expected] and len(outputs) == 2


def test_default_prompt_is_vlmeval_with_a_reasoning_budget(vector_file):
    from harness.api import METHODS

    method = L2VCoT(vector=str(vector_file), cutoff=8)
    assert method.options.prompt == "vlmeval"
    # the `direct` baseline's 32 tokens would cut any reasoning short: the `cot` baseline's budget instead
    assert method.options.max_new_tokens == METHODS.get("cot").Options.max_new_tokens == 512


def test_alpha_zero_vlmeval_is_the_unsteered_model_on_the_question_as_is(backbone, vector_file, images):
    queries = [Query(images=images[0], question=MCQ, choices=["red", "blue"]),
               Query(images=images[1], question=OPEN, choices=[])]
    plain = backbone.generate([q.images for q in queries], [MCQ, OPEN], 6)
    zero = L2VCoT(vector=str(vector_file), cutoff=8, alpha=0.0, max_new_tokens=6)(backbone, queries)
    assert [o.text for o in zero] == [g.text for g in plain]


def test_stored_config_by_prompt_setting(vector_file):
    vlmeval = L2VCoT(vector=str(vector_file), cutoff=8).config()
    assert vlmeval["prompt"] == "vlmeval" and "instruction" not in vlmeval and "open_instruction" not in vlmeval
    direct = L2VCoT(vector=str(vector_file), cutoff=8, prompt="direct").config()
    # exactly the keys (and instruction texts) l2v-cot stored before --prompt existed: old runs resume
    assert set(direct) == {"method", "vector", "alpha", "layer", "source_layer", "cutoff", "resample", "steer",
                           "max_new_tokens", "instruction", "open_instruction", "vector_sha256", "vector_source",
                           "source_layer_resolved"}
    assert direct["instruction"] == "Answer with the option's letter from the given choices directly."
    assert direct["open_instruction"] == "Answer the question using a single word or phrase."
    assert direct["max_new_tokens"] == 512


def test_bad_prompt_options_are_refused(vector_file):
    with pytest.raises(ValueError, match="--prompt must be vlmeval .* or direct"):
        L2VCoT(vector=str(vector_file), prompt="cot")
    with pytest.raises(ValueError, match="only appended with --prompt direct"):
        L2VCoT(vector=str(vector_file), instruction="Think first.")
    custom = L2VCoT(vector=str(vector_file), prompt="direct", instruction="Think first.")
    assert custom.prompt(Query(images=[], question=MCQ, choices=["red", "blue"])) == MCQ + "\nThink first."


# -- through the CLI, on a VLMEvalKit benchmark --------------------------------------------------------
def _scienceqa_tsv(path, image) -> str:
    """One ScienceQA_VAL row written here: hint, question, two options (C-E empty), answer A."""
    import pandas as pd

    png = io.BytesIO()
    image.save(png, format="PNG")
    row = {"index": 0, "image": base64.b64encode(png.getvalue()).decode("ascii"),
           "question": "Which colour is the circle?", "hint": "Look at the picture.", "A": "red", "B": "blue",
           "C": None, "D": None, "E": None, "answer": "A", "category": "Colors", "split": "val"}
    pd.DataFrame([row]).to_csv(path, sep="\t", index=False)
    return str(path)


def test_cli_prompt_option_end_to_end_on_scienceqa(tiny_model_dirs, vector_file, images, recorded, tmp_path,
                                                   capsys):
    """`harness run --bench scienceqa`: the runner formats the row with VLMEvalKit's own build_prompt, and the
    backbone receives exactly that text (default) or it plus the direct instruction (`--prompt direct`)."""
    from harness.cli import main
    from harness.run.store import Store

    db = f"sqlite:///{tmp_path / 'h.db'}"
    common = ["run", "--method", "l2v-cot", "--bench", "scienceqa", "--model", str(tiny_model_dirs["qwen2-vl"]),
              "--data", _scienceqa_tsv(tmp_path / "ScienceQA_VAL.tsv", images[0][0]), "--vector", str(vector_file),
              "--cutoff", "8", "--db", db, "--no-progress", "--max-new-tokens", "2"]
    assert main(common) == 0
    assert recorded == [[MCQ]]
    assert main([*common, "--prompt", "direct"]) == 0
    assert recorded == [[MCQ], [DIRECT_MCQ]]
    configs = {r["method_config"].get("prompt", "(none)"): r["method_config"] for r in Store(db, read_only=True).runs()}
    assert set(configs) == {"vlmeval", "(none)"} and configs["(none)"]["instruction"] == DIRECT_MCQ[len(MCQ) + 1:]
    capsys.readouterr()

    for bad, message in ((["--prompt", "cot"], "--prompt must be vlmeval"),
                         (["--instruction", "Think."], "only appended with --prompt direct")):
        assert main([*common, *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert len(recorded) == 2, "a refused option loads no model and generates nothing"
