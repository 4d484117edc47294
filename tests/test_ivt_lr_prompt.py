"""IVT-LR `--prompt published|harness|auto`: the reference code's own prompt (FYYDCC/IVT-LR), fed in
training and inference, recorded in checkpoints, the default for a published model.pth, refused where
the raw question is unknown.

The expected texts are written out by hand from the reference (`qwen_vl/qwenvl_run.py`
`process_example` for training, `qwen_vl/infer.py` `format_prompt` for inference), or rebuilt here
from the raw data rows with their own f-strings; none comes from `methods.ivt_lr.options`.
"""
from __future__ import annotations

import json

import pytest

# An M3CoT-like sample: stray spaces (the reference strips question and options), a context (the
# reference leaves it out).
STEM = "Which of these states is farthest north? "
CHOICES = ["West Virginia", " Louisiana", "Arizona ", "Oklahoma"]
CONTEXT = "Look at the map."
REFERENCE_TRAIN = ("[Question]:{Which of these states is farthest north?}\n[Options]:\n(A).{West Virginia}\n"
                   "(B).{Louisiana}\n(C).{Arizona}\n(D).{Oklahoma}\nAnswer:\n")
REFERENCE_INFER = ("[Question]:{Which of these states is farthest north?}\n[Options]:\nA.{West Virginia}\n"
                   "B.{Louisiana}\nC.{Arizona}\nD.{Oklahoma}\nAnswer:")
TINY_RUN = ["--top-k-patches", "4", "--max-new-tokens", "4", "--image-size", "56", "--no-progress"]


def _reference_infer(question: str, choices: list[str]) -> str:
    options = "".join(f"{letter}.{{{c.strip()}}}\n" for letter, c in zip("ABCDEFGH", choices))
    return f"[Question]:{{{question.strip()}}}\n[Options]:\n{options}Answer:"


def _reference_train(question: str, choices: list[str]) -> str:
    options = "".join(f"({letter}).{{{c.strip()}}}\n" for letter, c in zip("ABCDEFGH", choices))
    return f"[Question]:{{{question.strip()}}}\n[Options]:\n{options}Answer:\n"


@pytest.fixture(scope="module")
def m3cot_data(tmp_path_factory):
    from harness.testing.fixtures import write_m3cot_fixture

    return write_m3cot_fixture(tmp_path_factory.mktemp("prompt-data") / "m3cot", n=4)  # test: 4 rows, train: 3


def _rows(data, split: str) -> list[dict]:
    """The fixture's rows read with `datasets` directly, not through the benchmark's loader."""
    import datasets

    return list(datasets.load_from_disk(str(data))[split].remove_columns("image"))


@pytest.fixture()
def fed(monkeypatch):
    """Every prompt text a backbone is given (what follows the images in the chat template)."""
    from harness.backbones.base import Backbone

    seen: list[str] = []
    original = Backbone.build_inputs

    def recording(self, images, prompts):
        seen.extend(prompts)
        return original(self, images, prompts)

    monkeypatch.setattr(Backbone, "build_inputs", recording)
    return seen


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("harness: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_published_prompts_equal_the_reference_text():
    """Inference (`IVTLR.prompt`) gives infer.py's text and training (`epoch_items`) qwenvl_run.py's, from
    the raw question and options, without the context; `harness` keeps the formatted question."""
    from harness.api import METHODS, Query
    from harness.api.recipe import TrainConfig
    from harness.data.readers import TrainExample
    from methods.ivt_lr.train import IVTLRRecipe

    formatted = f"[Context]\n{CONTEXT}\n[Question]\n{STEM}\n[Choices]\n(A) West Virginia"
    query = Query(images=[], question=formatted, choices=CHOICES, stem=STEM)
    assert METHODS.get("ivt-lr")(prompt="published").prompt(query) == REFERENCE_INFER
    assert METHODS.get("ivt-lr")().prompt(query) == formatted + "\nAnswer:", "no checkpoint: the harness prompt"
    assert METHODS.get("ivt-lr")(prompt="harness", instruction="Say:").prompt(query) == formatted + "\nSay:"

    example = TrainExample(uid="1", question=formatted, rationale="The map shows it. So A.", answer="A",
                           stem=STEM, choices=CHOICES)
    config = TrainConfig(method="ivt-lr", bench="m3cot", model="m", data="d", out="o",
                         options={"prompt": "published"})
    (item,) = IVTLRRecipe(config).epoch_items([example], 0)
    assert item.prompt == REFERENCE_TRAIN
    harness_recipe = IVTLRRecipe(TrainConfig(method="ivt-lr", bench="m3cot", model="m", data="d", out="o"))
    assert harness_recipe.options.prompt == "harness"
    assert harness_recipe.epoch_items([example], 0)[0].prompt == formatted + "\nAnswer:"
    # the hand-rebuilt references used below agree with the literals
    assert (_reference_infer(STEM, CHOICES), _reference_train(STEM, CHOICES)) == (REFERENCE_INFER, REFERENCE_TRAIN)


def test_prompt_option_errors_are_one_line(tiny_model_dirs, m3cot_data, tmp_path, capsys):
    from harness.cli import main

    base = ["run", "--method", "ivt-lr", "--bench", "m3cot", "--model", str(tiny_model_dirs["qwen2-vl"]),
            "--data", str(m3cot_data), "--db", f"sqlite:///{tmp_path / 'h.db'}", *TINY_RUN]
    assert main([*base, "--prompt", "reference"]) == 2
    assert "--prompt must be one of: auto, published, harness" in _one_line_error(capsys)
    assert main([*base, "--prompt", "published", "--instruction", "Say:"]) == 2
    assert "--instruction applies to --prompt harness" in _one_line_error(capsys)


def test_train_then_run_with_the_published_prompt(tiny_model_dirs, m3cot_data, tmp_path, fed, capsys):
    """`harness train --prompt published` feeds the training text and records it; `harness run` on that
    checkpoint feeds the inference text by default (auto), stores it in the run's config, and refuses
    `--prompt harness` in one line."""
    from harness.cli import main
    from harness.run.store import Store

    model = str(tiny_model_dirs["qwen2-vl"])
    out = tmp_path / "ckpt"
    rc = main(["train", "--method", "ivt-lr", "--bench", "m3cot", "--model", model, "--data", str(m3cot_data),
               "--out", str(out), "--prompt", "published", "--init-token", "the", "--top-k-patches", "4",
               "--image-size", "56", "--epochs-per-stage", "1", "--batch-size", "2", "--lora-r", "4",
               "--max-steps", "1", "--no-progress"])
    assert rc == 0
    assert json.loads((out / "config.json").read_text())["prompt"] == "published"
    train_rows = _rows(m3cot_data, "train")
    expected_train = {_reference_train(r["question"], r["choices"]) for r in train_rows}
    assert len(fed) >= 2 and set(fed) <= expected_train  # the loader may collate one batch ahead
    assert not any(r["context"] and r["context"] in p for r in train_rows for p in fed), "no context"
    fed.clear()

    db = f"sqlite:///{tmp_path / 'h.db'}"
    run = ["run", "--method", "ivt-lr", "--bench", "m3cot", "--model", model, "--data", str(m3cot_data),
           "--checkpoint", str(out), "--db", db, *TINY_RUN]
    assert main(run) == 0
    test_rows = _rows(m3cot_data, "test")
    assert sorted(fed) == sorted(_reference_infer(r["question"], r["choices"]) for r in test_rows)
    (stored,) = Store(db, read_only=True).runs()
    assert stored["method_config"]["prompt"] == "published", "auto is stored resolved"

    assert main([*run, "--prompt", "harness"]) == 2
    line = _one_line_error(capsys)
    assert "trained with prompt='published'" in line and "--prompt 'published'" in line


def test_checkpoints_without_the_option_are_harness_prompt_checkpoints(tiny_model_dirs, m3cot_data, tmp_path):
    """A checkpoint written before `--prompt` (no key) was trained on the harness prompt: auto gives
    `harness` (and the stored config leaves the key out, as runs before the option did); `published`
    is refused."""
    from harness.api import METHODS
    from harness.api.recipe import TrainConfig
    from harness.backbones import load_backbone
    from harness.train.loop import train

    out = tmp_path / "old"
    train(TrainConfig(method="ivt-lr", bench="m3cot", model=str(tiny_model_dirs["qwen2-vl"]), data=str(m3cot_data),
                      out=str(out), batch_size=2, lora_r=4, max_steps=1,
                      options={"top_k_patches": 4, "init_token": "the", "image_size": 56}), progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["prompt"] == "harness"
    del config["prompt"]
    (out / "config.json").write_text(json.dumps(config))

    method = METHODS.get("ivt-lr")(checkpoint=str(out), image_size=56)
    assert method.options.prompt == "harness" and "prompt" not in method.config()
    with pytest.raises(ValueError, match="trained with prompt='harness' but this run uses 'published'"):
        METHODS.get("ivt-lr")(checkpoint=str(out), image_size=56, prompt="published").prepare(
            load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32"))


def test_a_published_pth_defaults_to_the_published_prompt(tiny_model_dirs, m3cot_data, tmp_path, publish, fed):
    import torch

    from harness.api import METHODS
    from harness.backbones import load_backbone
    from harness.cli import main
    from harness.latent.adapters import add_tokens
    from harness.run.store import Store
    from methods.ivt_lr.model import LATENT_TOKENS

    model = str(tiny_model_dirs["qwen2-vl"])
    source = load_backbone(model, device="cpu", dtype="float32")
    add_tokens(source, LATENT_TOKENS, init_from="the")
    torch.save(publish(source), tmp_path / "model.pth")
    pth = str(tmp_path / "model.pth")

    assert METHODS.get("ivt-lr")(checkpoint=pth).config()["prompt"] == "published"
    assert "prompt" not in METHODS.get("ivt-lr")(checkpoint=pth, prompt="harness").config()

    db = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["run", "--method", "ivt-lr", "--bench", "m3cot", "--model", model, "--data", str(m3cot_data),
                 "--checkpoint", pth, "--db", db, "--limit", "2", *TINY_RUN]) == 0
    expected = {_reference_infer(r["question"], r["choices"]) for r in _rows(m3cot_data, "test")}
    assert len(fed) == 2 and set(fed) <= expected
    (stored,) = Store(db, read_only=True).runs()
    assert stored["method_config"]["prompt"] == "published"


def test_the_vlmeval_adapter_path_refuses_the_published_prompt(tiny_model_dirs, images, tmp_path):
    """VLMEvalKit hands a method one formatted prompt: no raw question, so `published` refuses in one
    line instead of feeding another prompt; `harness` answers."""
    from harness.backbones import load_backbone
    from harness.api import METHODS
    from harness.integrations.vlmeval_model import message_to_query

    path = tmp_path / "red.png"
    images[0][0].save(path)
    message = [{"type": "image", "value": str(path)},
               {"type": "text", "value": "Question: What colour?\nOptions:\nA. red\nB. blue\n"}]
    query = message_to_query(message)
    assert query.choices == ["red", "blue"] and query.stem is None
    backbone = load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32")
    options = {"top_k_patches": 2, "max_new_tokens": 2, "image_size": 56}
    with pytest.raises(ValueError) as refused:
        METHODS.get("ivt-lr")(prompt="published", **options)(backbone, [query])
    assert len(str(refused.value).splitlines()) == 1 and "pass --prompt harness" in str(refused.value)
    (output,) = METHODS.get("ivt-lr")(**options)(backbone, [query])
    assert output.latent_steps == 3


def test_a_vlmeval_model_with_the_published_prompt_refuses(tiny_model_dirs, images, tmp_path, monkeypatch):
    """The same through the adapter's VLMEvalKit model (what `infer_data_job` calls): the ValueError leaves
    VLMEvalKit (which catches only RuntimeError there) and the adapter's entry point prints it as one line."""
    monkeypatch.setenv("LMUData", str(tmp_path))
    import harness.integrations.vlmeval_model as hv

    model = hv.make_model(method="ivt-lr", model=str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32",
                          prompt="published", top_k_patches="2", max_new_tokens="2", image_size="56")
    path = tmp_path / "red.png"
    images[0][0].save(path)
    with pytest.raises(ValueError, match="--prompt published needs the sample's own question") as refused:
        model.generate([{"type": "image", "value": str(path)}, {"type": "text", "value": "Question: What colour?"}])
    assert len(str(refused.value).splitlines()) == 1
