"""`harness train` with the IVT-LR recipe: curriculum sequences and labels, the loss goes down, the
grad-through-latents flag, train → save → load → run, resume, published checkpoints, ScienceQA data."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from harness.api.recipe import TrainConfig
from harness.latent.train import total_loss
from methods.ivt_lr.model import LATENT_TOKENS
from methods.ivt_lr.train import IVTLRRecipe, flat_sequence, split_rationale, stage_layout


@pytest.fixture(scope="module")
def m3cot_data(tmp_path_factory):
    from harness.testing.fixtures import write_m3cot_fixture

    return write_m3cot_fixture(tmp_path_factory.mktemp("train-data") / "m3cot", n=16)  # train split: 4 rows


def _config(tiny_model_dirs, data, out, **overrides) -> TrainConfig:
    options = {"top_k_patches": 4, "init_token": "the", "epochs_per_stage": 1, **overrides.pop("options", {})}
    base = dict(method="ivt-lr", bench="m3cot", model=str(tiny_model_dirs["qwen2-vl"]), data=str(data), out=str(out),
                batch_size=2, lora_r=4, lora_dropout=0.0, lr=1e-3, options=options)
    return TrainConfig(**{**base, **overrides})


def _recipe(config):
    from harness.backbones import load_backbone
    from harness.data.readers import read_examples

    recipe = IVTLRRecipe(config)
    backbone = load_backbone(config.model, device="cpu", dtype="float32", **recipe.backbone_options())
    module = recipe.setup(backbone)
    return recipe, backbone, module, read_examples("m3cot", config.data, "train")


def test_rationale_steps_and_stage_layout():
    assert split_rationale("A is red. B is blue. C. D. E.", 3) == ["A is red. B is blue", "C. D", "E."]
    assert split_rationale("One step only.", 3) == ["One step only."]
    steps = ["s1", "s2", "s3"]
    assert stage_layout(steps, 0, 3) == (0, steps)
    assert stage_layout(steps, 2, 3) == (2, ["s3"])
    assert stage_layout(steps, 3, 3) == (3, [])
    assert stage_layout(["s1", "s2"], 5, 3) == (2, []), "past the last stage: every step latent"


def test_stage_batches_hold_the_published_sequences_and_labels(tiny_model_dirs, m3cot_data, tmp_path):
    recipe, backbone, _, examples = _recipe(_config(tiny_model_dirs, m3cot_data, tmp_path / "out"))
    tokenizer = backbone.tokenizer
    latent_id = tokenizer.convert_tokens_to_ids("<|latent|>")
    eos = tokenizer.eos_token_id
    for stage in range(4):
        items = recipe.epoch_items(examples, stage)
        batch = recipe.collate(items[:2])
        assert batch["n_latent"] == stage
        for i, (item, example) in enumerate(zip(items[:2], examples[:2])):
            ids, labels = flat_sequence(batch, i, latent_id)
            # the published preprocessing: every image resized to 280 x 280 (--image-size)
            prompt = backbone.build_inputs([[_decode(example).resize((280, 280))]], [item.prompt])["input_ids"][0]
            steps = split_rationale(example.rationale, 3)[stage:]
            target = [t for s in steps for t in tokenizer.encode(s + "\n", add_special_tokens=False)]
            target += tokenizer.encode(f"Therefore, the answer is {example.answer}", add_special_tokens=False) + [eos]
            assert ids == prompt.tolist() + [latent_id] * stage + target
            assert labels == [-100] * (len(prompt) + stage) + target, "question and latent positions carry no labels"
            assert item.prompt.startswith(example.question) and item.prompt.endswith("\nAnswer:")


def _decode(example):
    from harness.api.types import decode_image

    return decode_image(example.image_refs[0])


def test_a_training_step_lowers_the_loss_on_a_fixed_batch(tiny_model_dirs, m3cot_data, tmp_path):
    recipe, backbone, module, examples = _recipe(_config(tiny_model_dirs, m3cot_data, tmp_path / "out"))
    batch = recipe.collate(recipe.epoch_items(examples, 2)[:2])  # stage 2: two latent steps in the sequence
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in module.named_parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    module.train()
    losses = []
    for _ in range(6):
        loss = total_loss(module(**batch))
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0] - 0.5, losses


def test_grad_through_latents_flag(tiny_model_dirs, m3cot_data, tmp_path):
    """Same forward either way; with the flag the latent chain carries gradients into earlier steps."""
    recipe, backbone, module, examples = _recipe(_config(tiny_model_dirs, m3cot_data, tmp_path / "out"))
    torch.manual_seed(0)
    for name, p in module.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)  # LoRA B starts at zero; make the adapter's path non-trivial
    batch = recipe.collate(recipe.epoch_items(examples, 3)[:2])
    results = {}
    for flag in (False, True):
        module.grad_through_latents = flag
        named, trace = module(**batch, return_trace=True)
        loss = total_loss(named)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        module.zero_grad()
        results[flag] = (loss.item(), grads, trace)
    assert results[False][0] == pytest.approx(results[True][0], abs=1e-6)
    assert not any(latent.requires_grad for latent in results[False][2].latents)
    assert all(latent.requires_grad for latent in results[True][2].latents)
    differs = max((results[True][1][n] - results[False][1][n]).abs().max().item() for n in results[True][1])
    assert differs > 1e-6, "gradients through the latent chain change the parameter gradients"


def test_train_save_load_run_end_to_end(tiny_model_dirs, m3cot_data, tmp_path):
    from harness.backbones import load_backbone
    from harness.cli import main
    from harness.run.store import Store
    from harness.train.loop import train
    from harness.api import METHODS

    out = tmp_path / "ckpt"
    report = train(_config(tiny_model_dirs, m3cot_data, out, max_steps=3), progress=False)
    assert report.global_step == 3
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"] == "ivt-lr" and saved["new_tokens"] == list(LATENT_TOKENS)
    from safetensors.torch import load_file

    adapter = load_file(str(out / "adapter.safetensors"))
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in adapter.items()), "the adapter was trained"

    # Loading merges the adapter: the merged model equals the base model + LoRA with the saved tensors.
    method = METHODS.get("ivt-lr")(checkpoint=str(out), top_k_patches=4, max_new_tokens=6)
    assert len(method.config()["checkpoint_sha256"]) == 16
    loaded = load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32")
    base_logits = _logits(loaded)
    method.prepare(loaded)
    assert len(loaded.tokenizer) >= loaded.model.get_input_embeddings().weight.shape[0] - 0
    with_adapter = load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32")
    from harness.latent.adapters import LoraSettings, add_tokens, attach_lora
    from harness.latent.checkpoint import load_tensors

    add_tokens(with_adapter, LATENT_TOKENS, rows=load_tensors(out, "new_embeddings"), vocab_size=saved["vocab_size"])
    attach_lora(with_adapter, LoraSettings.from_dict(saved["lora"]))
    with_adapter.model.load_state_dict(adapter, strict=False)
    torch.testing.assert_close(_logits(loaded), _logits(with_adapter), atol=1e-4, rtol=0)
    assert (_logits(loaded)[..., :base_logits.shape[-1]] - base_logits).abs().max() > 1e-4

    # A checkpoint trained with 1-D positions refuses to run with M-RoPE.
    with pytest.raises(ValueError, match="rope"):
        METHODS.get("ivt-lr")(checkpoint=str(out), rope="mrope").prepare(
            load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32"))
    # A checkpoint written before the rename (its config says "positions": "1d") loads the same way.
    import shutil

    legacy = tmp_path / "legacy-ckpt"
    shutil.copytree(out, legacy)
    legacy_config = {k: v for k, v in saved.items() if k != "rope"}
    (legacy / "config.json").write_text(json.dumps({**legacy_config, "positions": "1d"}))
    old = load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32")
    METHODS.get("ivt-lr")(checkpoint=str(legacy)).prepare(old)
    torch.testing.assert_close(_logits(old), _logits(loaded), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="rope"):
        METHODS.get("ivt-lr")(checkpoint=str(legacy), rope="mrope").prepare(
            load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32"))

    db = f"sqlite:///{tmp_path / 'h.db'}"
    rc = main(["run", "--method", "ivt-lr", "--bench", "m3cot", "--model", str(tiny_model_dirs["qwen2-vl"]),
               "--data", str(m3cot_data), "--limit", "3", "--batch-size", "2", "--checkpoint", str(out),
               "--top-k-patches", "4", "--max-new-tokens", "6", "--db", db, "--no-progress"])
    assert rc == 0
    store = Store(db, read_only=True)
    (run,) = store.runs()
    rows = store.samples(run["id"])
    assert len(rows) == 3 and all(r["latent_steps"] == 3 and not r.get("error") for r in rows)
    assert all(0 < r["generated_tokens"] <= 6 for r in rows)


def _logits(backbone):
    from PIL import Image

    inputs = backbone.build_inputs([[Image.new("RGB", (64, 64), (200, 40, 40))]], ["What colour is the shape?"])
    with torch.no_grad():
        return backbone.model(**inputs).logits


def test_resume_equals_an_uninterrupted_run(tiny_model_dirs, m3cot_data, tmp_path):
    from safetensors.torch import load_file

    from harness.train.loop import train

    # 4 rows, batch 2, 2 epochs (stages 0 and 1): 4 optimizer steps.
    straight = train(_config(tiny_model_dirs, m3cot_data, tmp_path / "a", epochs=2), progress=False)
    first = train(_config(tiny_model_dirs, m3cot_data, tmp_path / "b", epochs=2, max_steps=3), progress=False)
    resumed = train(_config(tiny_model_dirs, m3cot_data, tmp_path / "b", epochs=2), progress=False)
    assert (straight.global_step, first.global_step, resumed.global_step) == (4, 3, 4)
    assert resumed.resumed_from == {"epoch": 1, "batches_done": 1, "global_step": 3, "last_loss": first.last_loss}
    a, b = load_file(str(tmp_path / "a" / "adapter.safetensors")), load_file(str(tmp_path / "b" / "adapter.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


def test_train_refuses_a_foreign_out_folder(tiny_model_dirs, m3cot_data, tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc = main(["train", "--method", "ivt-lr", "--bench", "m3cot", "--model", str(tiny_model_dirs["qwen2-vl"]),
               "--data", str(m3cot_data), "--out", str(out), "--init-token", "the"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("harness: error: --out") and "not empty" in err and len(err.splitlines()) == 1
    rc = main(["train", "--method", "ivt-lr", "--bench", "m3cot", "--model", str(tiny_model_dirs["qwen2-vl"]),
               "--data", str(m3cot_data), "--out", str(tmp_path / "x"), "--no-such-option", "1"])
    assert rc == 2 and "has no option" in capsys.readouterr().err


def test_published_checkpoint_maps_onto_this_model(tiny_model_dirs, tmp_path, publish):
    """A state dict in the published layout (LoRA-wrapped Qwen2-VL under `base_causallm`, transformers
    4.51 names, vocabulary + 3, `embedding.weight`), saved with torch.save, loads with weights_only and
    gives the source model's logits."""
    from harness.backbones import load_backbone
    from harness.latent.adapters import add_tokens
    from harness.api import METHODS

    path = str(tiny_model_dirs["qwen2-vl"])
    source = load_backbone(path, device="cpu", dtype="float32")
    vocab = source.model.get_input_embeddings().weight.shape[0]
    add_tokens(source, LATENT_TOKENS, init_from="the")
    published = publish(source)
    assert any(".lora_A.default.weight" in k and "model.layers.0." in k for k in published)
    assert any(".base_layer.weight" in k for k in published) and any(".visual." in k for k in published)
    assert published["embedding.weight"].shape[0] == vocab + 3
    torch.save(published, tmp_path / "model.pth")

    target = load_backbone(path, device="cpu", dtype="float32")
    METHODS.get("ivt-lr")(checkpoint=str(tmp_path / "model.pth")).prepare(target)
    torch.testing.assert_close(_logits(target), _logits(source), atol=1e-4, rtol=0)
    assert target.tokenizer.convert_tokens_to_ids(list(LATENT_TOKENS)) == \
        source.tokenizer.convert_tokens_to_ids(list(LATENT_TOKENS))

    from fractions import Fraction  # an arbitrary class: weights_only refuses to unpickle it

    torch.save({"x": Fraction(1, 3)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only"):
        METHODS.get("ivt-lr")(checkpoint=str(tmp_path / "evil.pth")).prepare(load_backbone(path, device="cpu"))


def test_scienceqa_original_release_reader(tmp_path):
    from PIL import Image

    from harness.data.readers import read_examples

    problems = {
        "7": {"question": "Which is red?", "choices": ["apple", "sky"], "answer": 0, "hint": "Look closely.",
              "image": "image.png", "lecture": "", "solution": "Apples are red. The sky is blue.", "split": "train"},
        "8": {"question": "No image here?", "choices": ["a", "b"], "answer": 1, "hint": "", "image": None,
              "lecture": "", "solution": "Text only.", "split": "train"},
        "9": {"question": "Validation?", "choices": ["a", "b"], "answer": 1, "hint": "", "image": "image.png",
              "lecture": "", "solution": "Val.", "split": "val"},
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    for pid, split in (("7", "train"), ("9", "val")):
        (tmp_path / "images" / split / pid).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "images" / split / pid / "image.png")
    (example,) = read_examples("scienceqa", str(tmp_path), "train")
    assert example.uid == "7" and example.answer == "A" and example.rationale.startswith("Apples")
    assert example.question == ("Hint: Look closely.\nQuestion: Which is red?\nOptions:\nA. apple\nB. sky\n"
                                "Please select the correct answer from the options above. \n")
    assert example.image_refs[0].endswith("images/train/7/image.png")


def test_speed_command_json(tiny_model_dirs, capsys):
    from harness.cli import main

    rc = main(["speed", "--method", "ivt-lr", "--model", str(tiny_model_dirs["qwen2-vl"]), "--json",
               "--prompt-tokens", "80", "--latent-steps", "1,2", "--repeats", "1", "--top-k-patches", "2",
               "--image-size", "56", "--device", "cpu"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["k"] for r in rows] == [1, 2]
    for row in rows:
        assert {"prompt_tokens", "k", "cached_s", "reference_s", "ratio", "cot_s"} <= set(row)
        assert row["prompt_tokens"] >= 80 and row["cached_s"] > 0 and row["cot_tokens"] == row["k"] * 3


def test_config_is_data():
    config = TrainConfig(method="ivt-lr", bench="m3cot", model="m", data="d", out="o", options={"latent_steps": 2})
    assert json.loads(json.dumps(dataclasses.asdict(config)))["options"] == {"latent_steps": 2}
    assert "out" not in config.identity() and "max_steps" not in config.identity()
