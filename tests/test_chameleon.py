"""The Chameleon family on a tiny random checkpoint written by `harness tiny-model --family chameleon`.

The family-independent checks of tests/test_backbones.py, tests/test_latent_loop.py and tests/test_ivt_lr.py
are imported below and run here on Chameleon (this module's ``backbone`` / ``ivt_backbone`` fixtures
override the shared ones); the tests after them check what only Chameleon has: image tokens that are VQ
codes looked up in the text embedding table, image-code logits the model forbids, pixels in the model's dtype.
"""
from __future__ import annotations

import json

import pytest
import torch

# The shared per-family checks, collected again in this module so that they take its fixtures.
from test_backbones import (  # noqa: F401
    test_appending_step_by_step_equals_one_full_forward,
    test_greedy_decode_through_the_cache_matches_generate,
    test_image_positions_hold_the_image_features,
    test_layer_outputs_are_decoder_layer_outputs,
    test_prefill_matches_the_models_own_forward,
    test_wrong_positions_would_be_caught,
)
from test_ivt_lr import (  # noqa: F401
    big_images,
    test_a_batch_equals_each_sample_alone,
    test_cached_loop_equals_reference_recomputation,
    test_selected_patches_are_distinct_image_positions,
)
from test_latent_loop import test_a_new_policy_runs_cached_and_reference_alike  # noqa: F401

PROMPTS = ["What colour is the shape?", "Which shape is shown? Options: (A) circle (B) square (C) triangle"]
GRID = (4, 4)  # the tiny model: 32 px through a 4-level VQ-VAE (3 halvings)


@pytest.fixture(scope="module")
def chameleon_dir(tmp_path_factory):
    from harness.cli import main

    out = tmp_path_factory.mktemp("chameleon") / "tiny"
    assert main(["tiny-model", "--family", "chameleon", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def backbone(chameleon_dir):
    from harness.backbones import load_backbone

    return load_backbone(str(chameleon_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def ivt_backbone(backbone):
    return backbone  # Chameleon has 1-D positions only: both rope modes are the same


def code_token(code: int) -> str:
    """Chameleon's vocabulary name of VQ code ``code``: IMGIMG, the decimal digits as letters A-J, Z."""
    return "IMGIMG" + "".join("ABCDEFGHIJ"[int(d)] for d in str(code)) + "Z"


@torch.no_grad()
def codes_by_hand(model, pixel_values):
    """[N, h*w] codebook indices, row-major, as the nearest codebook entry of each latent (not the
    model's quantizer or vocabulary mapping), and the latent grid (h, w)."""
    vq = model.model.vqmodel
    latents = vq.quant_conv(vq.encoder(pixel_values))  # [N, C, h, w]
    n, c, h, w = latents.shape
    flat = latents.permute(0, 2, 3, 1).reshape(n, h * w, c)
    book = vq.quantize.embedding.weight
    return torch.cdist(flat, book[None].expand(n, -1, -1)).argmin(-1), (h, w)


def test_the_tiny_checkpoint_is_a_chameleon(backbone, capsys):
    from harness.cli import main

    assert backbone.family == "chameleon" and type(backbone.model).__name__ == "ChameleonForConditionalGeneration"
    assert sum(p.numel() for p in backbone.model.parameters()) < 2_000_000
    assert backbone.projector_parameters() == []
    assert {id(p) for p in backbone.vision_encoder_parameters()} == \
        {id(p) for p in backbone.model.model.vqmodel.parameters()}
    assert main(["list"]) == 0
    assert "chameleon" in capsys.readouterr().out


def test_image_positions_hold_the_embeddings_of_the_vq_code_tokens(backbone, images):
    """Between <racm3:break> and <eoss> sit 16 <image> placeholders; after the prefill they hold the
    input embeddings of the tokens IMGIMG…Z of the image's VQ codes, in row-major grid order."""
    tokenizer = backbone.tokenizer
    inputs = backbone.build_inputs(images, PROMPTS)
    state, _ = backbone.prefill(inputs)
    image, boi, eoi, sep, bos = tokenizer.convert_tokens_to_ids(
        ["<image>", "<racm3:break>", "<eoss>", "<reserved08706>", "<s>"])
    codes, grid = codes_by_hand(backbone.model, inputs["pixel_values"])
    assert grid == GRID and backbone.image_grid(inputs) == [GRID, GRID]
    assert len(set(codes.flatten().tolist())) > 4, "the check below needs images made of several codes"
    assert not torch.equal(codes[0], codes[1]), "two different images, two different code grids"
    table = backbone.model.get_input_embeddings().weight
    for b, ids in enumerate(inputs["input_ids"]):
        real = ids[inputs["attention_mask"][b].bool()]
        assert real[0] == bos and real[-1] == sep, "BOS first; the processor's chat-mode separator last"
        start = int((ids == boi).nonzero()) + 1
        assert ids[start + 16] == eoi and (ids[start:start + 16] == image).all()
        expected_mask = torch.zeros_like(ids, dtype=torch.bool)
        expected_mask[start:start + 16] = True
        assert torch.equal(state.image_mask[b], expected_mask)
        token_ids = tokenizer.convert_tokens_to_ids([code_token(c) for c in codes[b].tolist()])
        assert None not in token_ids and image not in token_ids
        torch.testing.assert_close(state.inputs_embeds[b, start:start + 16], table[token_ids], atol=0, rtol=0)


def test_ivt_lr_patches_are_code_token_embeddings(backbone, images):
    """IVT-LR's latent vision on Chameleon: the appended patches are rows of the embedding table, those
    of the code tokens at the chosen image positions."""
    from methods.ivt_lr.policy import latent_loop_reference

    inputs = backbone.build_inputs(images[1:], PROMPTS[1:])
    _, trace, embeds = latent_loop_reference(backbone, inputs, 2, 3)
    codes, _ = codes_by_hand(backbone.model, inputs["pixel_values"])
    start = int((inputs["input_ids"][0] == backbone.tokenizer.convert_tokens_to_ids("<racm3:break>")).nonzero()) + 1
    table = backbone.model.get_input_embeddings().weight
    prompt_len = inputs["input_ids"].shape[1]
    for step in range(2):
        chosen = trace.selected[step][0]
        token_ids = backbone.tokenizer.convert_tokens_to_ids([code_token(c) for c in codes[0, chosen - start].tolist()])
        at = prompt_len + step * 4
        torch.testing.assert_close(embeds[0, at:at + 3], table[token_ids], atol=0, rtol=0)


def test_image_code_tokens_are_never_scored(backbone, images):
    """The model's forward sets the logits of the 64 code tokens to the dtype's minimum; the backbone
    does too (prefill, appends), and leaves every other logit as the LM head gives it."""
    inputs = backbone.build_inputs(images, PROMPTS)
    state, result = backbone.prefill(inputs)
    codes = torch.tensor(backbone.tokenizer.convert_tokens_to_ids([code_token(c) for c in range(64)]))
    others = torch.ones(result.logits.shape[-1], dtype=torch.bool)
    others[codes] = False
    raw = backbone.lm_head(result.last_hidden)
    assert (result.logits[..., codes] == torch.finfo(torch.float32).min).all()
    torch.testing.assert_close(result.logits[..., others], raw[..., others], atol=0, rtol=0)
    assert torch.isin(raw.argmax(-1), codes).any(), "unmasked, the tiny model's top token is a code somewhere"
    step = backbone.append(state, torch.randn(2, 2, backbone.hidden_size, generator=torch.Generator().manual_seed(0)))
    assert (step.logits[..., codes] == torch.finfo(torch.float32).min).all()


def test_attention_probe_equals_eager_attention_after_prefill_and_append(chameleon_dir, images):
    """The probed row (last query over all keys, mean over layers and heads, sdpa model) equals eager
    attention's output_attentions: after the prefill (the model's own multimodal forward), and after
    two cached appends (one cache-free eager forward of the language model over the whole sequence)."""
    from harness.backbones import load_backbone

    sdpa = load_backbone(str(chameleon_dir), device="cpu", dtype="float32", attn_implementation="sdpa")
    eager = load_backbone(str(chameleon_dir), device="cpu", dtype="float32", attn_implementation="eager")
    inputs = sdpa.build_inputs(images, PROMPTS)
    _, probed = sdpa.prefill(inputs, probe_attention=True)
    with torch.no_grad():
        out = eager.model(**inputs, output_attentions=True)
    expected = torch.stack([a[:, :, -1, :] for a in out.attentions]).mean(dim=(0, 2))
    torch.testing.assert_close(probed.query_attention, expected, atol=1e-5, rtol=0)

    extra = torch.randn(2, 3, sdpa.hidden_size, generator=torch.Generator().manual_seed(2))
    state, _ = sdpa.prefill(inputs)
    sdpa.append(state, extra[:, :2])
    step = sdpa.append(state, extra[:, 2:], probe_attention=True)
    positions, start = eager.prefill_positions(inputs)
    mask = torch.cat([inputs["attention_mask"], torch.ones(2, 3, dtype=inputs["attention_mask"].dtype)], dim=1)
    with torch.no_grad():
        out = eager.language_model(inputs_embeds=torch.cat([state.inputs_embeds, extra], dim=1), attention_mask=mask,
                                   position_ids=torch.cat([positions, eager.text_positions(start, 3)], dim=-1),
                                   output_attentions=True)
    expected = torch.stack([a[:, :, -1, :] for a in out.attentions]).mean(dim=(0, 2))
    torch.testing.assert_close(step.query_attention, expected, atol=1e-5, rtol=0)
    padding = inputs["attention_mask"] == 0
    assert padding.any() and (step.query_attention[:, :padding.shape[1]][padding] == 0).all(), "padding gets none"


def test_pixels_take_the_models_dtype(chameleon_dir, images):
    """In bfloat16 (the default on a GPU) the VQ-VAE's first conv needs bfloat16 pixels; the processor
    gives float32."""
    from harness.backbones import load_backbone

    backbone = load_backbone(str(chameleon_dir), device="cpu", dtype="bfloat16")
    inputs = backbone.build_inputs(images[:1], PROMPTS[:1])
    assert inputs["pixel_values"].dtype == torch.bfloat16
    state, _ = backbone.prefill(inputs)
    assert state.inputs_embeds.dtype == torch.bfloat16
    assert backbone.generate(images[:1], PROMPTS[:1], max_new_tokens=2)[0].generated_tokens > 0


def test_lora_targets_the_decoder_only(backbone):
    from harness.latent.adapters import DEFAULT_LORA_TARGETS, lora_target_names

    names = lora_target_names(backbone, DEFAULT_LORA_TARGETS)
    assert len(names) == len(backbone.decoder_layers()) * len(DEFAULT_LORA_TARGETS)
    assert all(name.startswith("model.layers.") for name in names), "nothing in the VQ-VAE"


def test_direct_and_ivt_lr_run_end_to_end_through_the_cli(chameleon_dir, tmp_path, capsys):
    from harness.cli import main
    from harness.run.store import Store
    from harness.testing.fixtures import write_all

    data = str(write_all(tmp_path / "data", n=4, benches=["scienceqa"])["scienceqa"])
    db = f"sqlite:///{tmp_path / 'h.db'}"
    common = ["--bench", "scienceqa", "--model", str(chameleon_dir), "--data", data, "--limit", "2",
              "--max-new-tokens", "4", "--db", db, "--json", "--no-progress"]
    reports = {}
    for method, extra in (("direct", []), ("ivt-lr", ["--latent-steps", "2", "--top-k-patches", "5"])):
        assert main(["run", "--method", method, *common, *extra]) == 0
        reports[method] = json.loads(capsys.readouterr().out)
        assert reports[method]["metrics"]["n"] == 2 and reports[method]["metrics"]["n_errors"] == 0
    samples = Store(db, read_only=True).samples(reports["ivt-lr"]["run_id"])
    assert [s["extra"]["patches_per_step"] for s in samples] == [[5, 5], [5, 5]]
    assert all(s["latent_steps"] == 2 and s["generated_tokens"] > 0 for s in samples)
