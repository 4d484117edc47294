"""Modal-mixed CoT mechanism tests, each against a reference that shares no code with what it tests:
sketch targets against the model's own image features pooled by hand, the switch (open → N_s head
outputs → close → text) seen by a hook on the language model's inputs, mixed cached decoding against a
from-scratch forward over the whole sequence, SFT labels and conditions against an independent full
forward, a batch against one by one, and training → running through the CLI. The head and the GRPO
math have their own tests (tests/test_modal_mixed_head.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from harness.cli import main
from methods.modal_mixed.head import make_head
from methods.modal_mixed.options import CONTROL_TOKENS
from methods.modal_mixed.policy import SketchWriter
from methods.modal_mixed.sketch import Standardizer, pool_shape, sketch_targets


def _image(colour, shape="circle", size=64):
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    box = [12, 12, size - 12, size - 12]
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
    return image


@pytest.fixture(scope="module")
def llava(tiny_model_dirs):
    """The tiny LLaVA (4×4 CLIP patch grid), control tokens added, a random head: the method's side."""
    from harness.backbones import load_backbone
    from harness.latent.adapters import add_tokens

    backbone = load_backbone(str(tiny_model_dirs["llava"]), device="cpu", dtype="float32")
    ids = add_tokens(backbone, CONTROL_TOKENS, init_from="image")
    torch.manual_seed(0)
    head = make_head("diffusion", backbone.hidden_size, backbone.hidden_size, width=32, depth=2).eval()
    return backbone, ids, head, Standardizer(backbone.hidden_size)


def test_pool_shape():
    assert [pool_shape(n) for n in (16, 4, 6, 7, 1)] == [(4, 4), (2, 2), (2, 3), (1, 7), (1, 1)]


def test_sketch_targets_are_the_models_own_image_features_pooled(llava):
    backbone, *_ = llava
    images = [_image((220, 30, 30)), _image((30, 30, 220), "square")]
    got = sketch_targets(backbone, images, 4)
    # Reference: the HF model's own image features (vision tower + projector), averaged over 2×2 blocks by numpy.
    processed = backbone.processor.image_processor(images, return_tensors="pt")
    with torch.no_grad():
        features = backbone.model.model.get_image_features(
            pixel_values=processed["pixel_values"], vision_feature_layer=backbone.model.config.vision_feature_layer,
            vision_feature_select_strategy=backbone.model.config.vision_feature_select_strategy)
    if hasattr(features, "pooler_output"):  # newer transformers: the projected features per image
        features = features.pooler_output
    features = torch.stack(list(features)) if isinstance(features, (list, tuple)) else features
    for i in range(2):
        grid = features[i].reshape(4, 4, -1).numpy()
        blocks = np.stack([grid[r:r + 2, c:c + 2].mean((0, 1)) for r in (0, 2) for c in (0, 2)])
        np.testing.assert_allclose(got[i].numpy(), blocks, atol=1e-5)


class _Inputs:
    """Every inputs_embeds the language model is called with (prefill, then each append)."""

    def __init__(self, backbone):
        self.calls = []
        self.handle = backbone.language_model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, _module, args, kwargs):
        self.calls.append(kwargs["inputs_embeds"].detach().clone())

    def close(self):
        self.handle.remove()


def _forced_decode(backbone, ids, head, standardizer, prompts, n_tokens=3, max_new=6):
    """Prefill, force <|sketch|> as the first token, decode with the writer; returns (ids, writer, state)."""
    from harness.latent.decode import decode

    inputs = backbone.build_inputs([[_image((220, 30, 30))], [_image((30, 200, 30), "square")]][:len(prompts)],
                                   prompts)
    with torch.no_grad():
        state, _ = backbone.prefill(inputs)
    state.logits[:, ids[0]] = 1e4  # the model opens a sketch first
    writer = SketchWriter(backbone, head, standardizer, n_tokens, ids[1], prompts, sampler_steps=3)
    decoded = decode(backbone, state, max_new, switch_token=ids[0], on_switch=writer)
    return inputs, decoded, writer, state


def test_the_open_token_appends_the_heads_sketch_then_close_then_text(llava):
    backbone, ids, head, standardizer = llava
    seen = _Inputs(backbone)
    try:
        _, decoded, writer, _ = _forced_decode(backbone, ids, head, standardizer, ["What is shown?"])
    finally:
        seen.close()
    embed = backbone.model.get_input_embeddings().weight
    assert decoded[0][0] == ids[0]
    calls = seen.calls[1:]  # after the prefill: the open token, 3 sketch tokens, close, then text tokens
    torch.testing.assert_close(calls[0][0, 0], embed[ids[0]])
    for k in range(3):
        torch.testing.assert_close(calls[1 + k][0, 0], writer.tokens[0][k])
    torch.testing.assert_close(calls[4][0, 0], embed[ids[1]])
    assert all(c.shape[1] == 1 for c in calls) and len(calls) >= 6
    torch.testing.assert_close(calls[5][0, 0], embed[decoded[0][1]])  # text resumes with the next decoded token
    assert writer.segments == [1]


def test_mixed_cached_decoding_equals_a_forward_from_scratch(llava):
    """The cache, positions and masks of the mixed sequence: every decoded text token is the argmax of
    a single full forward over [prompt; everything appended], and the sketch tokens' conditions are
    that forward's hidden states."""
    backbone, ids, head, standardizer = llava
    seen = _Inputs(backbone)
    try:
        inputs, decoded, writer, _ = _forced_decode(backbone, ids, head, standardizer, ["What is shown?"], max_new=5)
    finally:
        seen.close()
    sequence = torch.cat(seen.calls, dim=1)  # [1, T_prompt + appended, D]
    n_prompt = seen.calls[0].shape[1]
    with torch.no_grad():
        out = backbone.language_model(inputs_embeds=sequence, attention_mask=torch.ones(sequence.shape[:2], dtype=torch.long),
                                      use_cache=False)
        logits = backbone.lm_head(out.last_hidden_state)
    # Appended: open (0), 3 sketch tokens (1-3), close (4), then text; decoded[m] (m >= 1) is predicted
    # at appended index 3 + m (close for m = 1).
    n_text = sequence.shape[1] - n_prompt - 5  # text tokens appended after close (each decoded one is)
    assert n_text >= 1
    predicted = [int(logits[0, n_prompt + 3 + m].argmax()) for m in range(1, n_text + 1)]
    assert predicted == decoded[0][1:1 + n_text]
    # The k-th sketch token was sampled from the hidden state at the position before it.
    for k in range(3):
        generator = torch.Generator().manual_seed((writer.seeds[0] + 7919 * 0 + k) % 2**63)
        cond = out.last_hidden_state[0, n_prompt + k][None]
        expected = standardizer.inverse(head.sample(cond, steps=3, generator=generator))
        torch.testing.assert_close(writer.tokens[0][k][None], expected, atol=1e-4, rtol=1e-4)


def test_a_batch_equals_one_by_one(llava):
    backbone, ids, head, standardizer = llava
    prompts = ["What is shown?", "Which colour is the square shape in this image?"]
    _, batched, writer_b, _ = _forced_decode(backbone, ids, head, standardizer, prompts)
    for i, prompt in enumerate(prompts):
        inputs = backbone.build_inputs([[[_image((220, 30, 30))], [_image((30, 200, 30), "square")]][i]], [prompt])
        from harness.latent.decode import decode

        with torch.no_grad():
            state, _ = backbone.prefill(inputs)
        state.logits[:, ids[0]] = 1e4
        writer = SketchWriter(backbone, head, standardizer, 3, ids[1], [prompt], sampler_steps=3)
        alone = decode(backbone, state, 6, switch_token=ids[0], on_switch=writer)
        assert [t for t in batched[i] if t != backbone.pad_token_id] == [t for t in alone[0] if t != backbone.pad_token_id]
        for a, b in zip(writer_b.tokens[i], writer.tokens[0]):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# -- SFT ---------------------------------------------------------------------------------------------

def _recipe(tiny_model_dirs, tmp_path, **options):
    from harness.api import TrainConfig
    from harness.backbones import load_backbone
    from methods.modal_mixed.train import ModalMixedRecipe

    config = TrainConfig(method="modal-mixed", bench="easyvqa-traces", model=str(tiny_model_dirs["llava"]), data=None,
                         out=str(tmp_path / "out"), lora_r=4, lora_dropout=0.0,
                         options={"sketch_tokens": 4, "head_width": 32, "head_depth": 2, **options})
    recipe = ModalMixedRecipe(config)
    backbone = load_backbone(config.model, device="cpu", dtype="float32")
    return recipe, recipe.setup(backbone)


def _examples():
    from harness.data.readers import TrainExample

    red, blue = _image((220, 30, 30)), _image((30, 30, 220), "square")
    return [TrainExample(uid="a", question="What colour is it?", rationale="r", answer="red", image_refs=[red],
                         trace=[("text", "The question asks the colour."), ("image", red), ("text", "It is red.")]),
            TrainExample(uid="b", question="Is it a square?", rationale="r", answer="yes", image_refs=[blue],
                         trace=[("text", "The question asks the shape."), ("image", blue), ("text", "It is a square.")])]


def test_sft_labels_slots_and_conditions(tiny_model_dirs, tmp_path):
    recipe, module = _recipe(tiny_model_dirs, tmp_path)
    backbone = recipe.backbone
    items = recipe.epoch_items(_examples(), 0)
    batch = recipe.collate(items)
    open_id, close_id = recipe.token_ids
    ids, slots, labels = batch["target_ids"], batch["sketch_slots"], batch["labels"]
    tokenizer = backbone.tokenizer
    for i, ex in enumerate(_examples()):
        first = tokenizer.encode(ex.trace[0][1], add_special_tokens=False)
        row = ids[i].tolist()
        j = len(first)
        assert row[:j] == first and row[j] == open_id and row[j + 5] == close_id
        assert slots[i].nonzero()[:, 0].tolist() == [j + 1, j + 2, j + 3, j + 4]
        assert (labels[i][slots[i]] == -100).all() and labels[i][j] == open_id and labels[i][j + 5] == close_id
        # the slots hold the true (unstandardised) sketch of the intermediate image
        expected = sketch_targets(backbone, [ex.trace[1][1]], 4)[0]
        torch.testing.assert_close(batch["sketch_values"][i][slots[i]], expected, atol=1e-5, rtol=1e-5)
    losses, before = module(**batch, return_states=True)
    assert set(losses) == {"lm", "sketch"} and all(torch.isfinite(v) for v in losses.values())
    # Conditions: the hidden state at the position before each slot, from an independent full forward.
    with torch.no_grad():
        state, _ = backbone.prefill(batch["inputs"])
        embeds = backbone.embed_tokens(batch["target_ids"])
        embeds = torch.where(slots[..., None], batch["sketch_values"], embeds)
        sequence = torch.cat([state.inputs_embeds, embeds], dim=1)
        mask = torch.cat([batch["inputs"]["attention_mask"], batch["target_mask"]], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = backbone.language_model(inputs_embeds=sequence, attention_mask=mask, position_ids=positions,
                                      use_cache=False)
    n_prompt = state.inputs_embeds.shape[1]
    for i in range(2):
        for j in slots[i].nonzero()[:, 0].tolist():
            torch.testing.assert_close(before[i, j], out.last_hidden_state[i, n_prompt + j - 1], atol=1e-4, rtol=1e-4)


def test_only_lora_the_control_rows_and_the_head_train(tiny_model_dirs, tmp_path):
    recipe, module = _recipe(tiny_model_dirs, tmp_path)
    groups = recipe.param_groups(module)
    trained = {id(p) for g in groups for p in g["params"]}
    for name, p in module.model.named_parameters():
        assert p.requires_grad == (id(p) in trained), name
        assert ("lora_" in name or "embed_tokens" in name or "lm_head" in name) == (id(p) in trained), name
    batch = recipe.collate(recipe.epoch_items(_examples(), 0))
    sum(module(**batch).values()).backward()
    embed = module.model.get_input_embeddings().weight
    rows = embed.grad.abs().sum(-1).nonzero()[:, 0].tolist()
    assert set(rows) <= set(recipe.token_ids) and rows  # only the control tokens' rows move


@pytest.mark.parametrize("flags", [[], pytest.param(["--no-diffusion", "true"], marks=pytest.mark.slow),
                                   pytest.param(["--no-sketch", "true"], marks=pytest.mark.slow)])
def test_train_then_run_through_the_cli(tiny_model_dirs, tmp_path, capsys, flags):
    out = tmp_path / "ckpt"
    assert main(["train", "--method", "modal-mixed", "--bench", "easyvqa-traces", "--model", str(tiny_model_dirs["llava"]),
                 "--out", str(out), "--limit", "4", "--max-steps", "1", "--batch-size", "2", "--lora-r", "4",
                 "--sketch-tokens", "4", "--head-width", "32", "--head-depth", "2", "--no-progress", *flags]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "modal-mixed" and config["sketch_tokens"] == 4
    assert (out / "head.safetensors").exists() == ("--no-sketch" not in flags)
    capsys.readouterr()
    assert main(["run", "--method", "modal-mixed", "--bench", "easyvqa", "--model", str(tiny_model_dirs["llava"]),
                 "--checkpoint", str(out), "--limit", "3", "--max-new-tokens", "8", "--sampler-steps", "2",
                 "--db", f"sqlite:///{tmp_path / 'r.db'}", "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"]["n"] == 3 and report["metrics"]["n_errors"] == 0


@pytest.mark.parametrize("argv, message", [
    (["run", "--method", "modal-mixed", "--bench", "easyvqa", "--model", "x"], "modal-mixed needs --checkpoint"),
    (["train", "--method", "modal-mixed", "--bench", "easyvqa-traces", "--model", "x", "--out", "o", "--stage", "rl"],
     "--stage rl needs --checkpoint SFT_DIR"),
    (["train", "--method", "modal-mixed", "--bench", "easyvqa-traces", "--model", "x", "--out", "o",
      "--sketch-tokens", "0"], "--sketch-tokens must be at least 1"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# -- RL -------------------------------------------------------------------------------------------------

def test_a_rollout_is_rebuilt_with_its_sketches_and_only_sampled_tokens_as_actions():
    from methods.modal_mixed.rl import rollout_sequence

    OPEN, CLOSE, EOS, PAD = 90, 91, 2, 0
    v = [torch.full((3,), float(k)) for k in range(4)]
    ids, mask, slots, values, actions = rollout_sequence(
        [[5, OPEN, 7, EOS, PAD], [OPEN, 9, OPEN, 8]], [v[:2], v], 2, OPEN, CLOSE, {EOS}, PAD, 3)
    assert ids[0].tolist() == [5, OPEN, PAD, PAD, CLOSE, 7, EOS, PAD, PAD, PAD]
    assert mask[0].tolist() == [1] * 7 + [0] * 3
    assert slots[0].nonzero()[:, 0].tolist() == [2, 3]
    assert actions[0].nonzero()[:, 0].tolist() == [0, 1, 5, 6]  # not the slots, not the close token
    assert ids[1].tolist() == [OPEN, PAD, PAD, CLOSE, 9, OPEN, PAD, PAD, CLOSE, 8]
    assert [values[1, j, 0].item() for j in (1, 2, 6, 7)] == [0.0, 1.0, 2.0, 3.0]
    assert actions[1].nonzero()[:, 0].tolist() == [0, 4, 5, 9]


def test_rl_trains_on_an_sft_checkpoint_and_its_checkpoint_runs(tiny_model_dirs, tmp_path, capsys):
    model = str(tiny_model_dirs["llava"])
    common = ["--bench", "easyvqa-traces", "--model", model, "--limit", "4", "--max-steps", "1", "--batch-size", "2",
              "--lora-r", "4", "--no-progress"]
    sft, rl = tmp_path / "sft", tmp_path / "rl"
    assert main(["train", "--method", "modal-mixed", *common, "--out", str(sft), "--sketch-tokens", "4",
                 "--head-width", "32", "--head-depth", "2"]) == 0
    assert main(["train", "--method", "modal-mixed", *common, "--out", str(rl), "--stage", "rl", "--checkpoint",
                 str(sft), "--group-size", "2", "--rl-max-new-tokens", "6", "--rl-sampler-steps", "2"]) == 0
    config = json.loads((rl / "config.json").read_text())
    assert config["stage"] == "rl" and config["sketch_tokens"] == 4 and (rl / "sft_adapter.safetensors").exists()
    capsys.readouterr()
    assert main(["run", "--method", "modal-mixed", "--bench", "easyvqa", "--model", model, "--checkpoint", str(rl),
                 "--limit", "2", "--max-new-tokens", "6", "--sampler-steps", "2", "--db", f"sqlite:///{tmp_path / 'r.db'}",
                 "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["n_errors"] == 0
    # RL from an RL checkpoint, or with a contradicting architecture, is refused in one line
    assert main(["train", "--method", "modal-mixed", *common, "--out", str(tmp_path / "x"), "--stage", "rl",
                 "--checkpoint", str(rl)]) == 2
    assert "RL starts from a --stage sft one" in capsys.readouterr().err
