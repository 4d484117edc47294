"""The backbone interface, for both families: cache equivalence, positions, attention rows, generation."""
from __future__ import annotations

import pytest
import torch

from harness.latent.decode import decode

PROMPTS = ["What colour is the shape?", "Which shape is shown? Options: (A) circle (B) square (C) triangle"]
ATOL = 2e-5  # fp32 on CPU; a position off by one moves logits by far more (see below)


def test_prefill_matches_the_models_own_forward(backbone, images):
    inputs = backbone.build_inputs(images, PROMPTS)
    assert inputs["attention_mask"][0].sum() != inputs["attention_mask"][1].sum(), "batch must exercise left padding"
    reference = backbone.model(**inputs).logits[:, -1]
    state, _ = backbone.prefill(inputs)
    torch.testing.assert_close(state.logits, reference, atol=ATOL, rtol=0)


def test_appending_step_by_step_equals_one_full_forward(backbone, images):
    """Embeddings appended one, then several at a time through the KV cache give the logits of one
    cache-free forward over the whole sequence with the same positions."""
    torch.manual_seed(0)
    inputs = backbone.build_inputs(images, PROMPTS)
    state, _ = backbone.prefill(inputs)
    prefill_positions, start = backbone.prefill_positions(inputs)
    chunks = [torch.randn(2, 1, backbone.hidden_size), torch.randn(2, 3, backbone.hidden_size),
              backbone.embed_tokens(torch.tensor([[5, 6], [7, 8]]))]
    step_logits = [backbone.append(state, chunk).logits for chunk in chunks]

    appended = torch.cat(chunks, dim=1)
    n = appended.shape[1]
    positions = backbone.concat_positions(prefill_positions, backbone.text_positions(start, n))
    mask = torch.cat([inputs["attention_mask"], torch.ones(2, n, dtype=inputs["attention_mask"].dtype)], dim=1)
    full = backbone.forward_embeds(torch.cat([state.inputs_embeds, appended], dim=1), mask, positions)

    torch.testing.assert_close(torch.cat(step_logits, dim=1), full.logits[:, -n:], atol=ATOL, rtol=0)
    assert state.length == inputs["input_ids"].shape[1] + n
    torch.testing.assert_close(state.next_position, start + n)


def test_wrong_positions_would_be_caught(backbone, images):
    """The equivalence test can fail: shifting appended positions by one changes the logits."""
    inputs = backbone.build_inputs(images, PROMPTS)
    state, _ = backbone.prefill(inputs)
    extra = torch.randn(2, 2, backbone.hidden_size, generator=torch.Generator().manual_seed(1))
    cached = backbone.append(state, extra).logits
    prefill_positions, start = backbone.prefill_positions(inputs)
    shifted = backbone.concat_positions(prefill_positions, backbone.text_positions(start + 1, 2))
    mask = torch.cat([inputs["attention_mask"], torch.ones(2, 2, dtype=torch.long)], dim=1)
    full = backbone.forward_embeds(torch.cat([state.inputs_embeds, extra], dim=1), mask, shifted)
    assert (full.logits[:, -2:] - cached).abs().max() > 1e-3


def test_greedy_decode_through_the_cache_matches_generate(backbone, images):
    generations = backbone.generate(images, PROMPTS, max_new_tokens=8)
    state, _ = backbone.prefill(backbone.build_inputs(images, PROMPTS))
    decoded = decode(backbone, state, max_new_tokens=8)
    for generation, ids in zip(generations, decoded):
        assert backbone.finish(ids, generation.input_tokens).token_ids == generation.token_ids
        assert generation.generated_tokens == len(generation.token_ids) > 0


def test_image_positions_hold_the_image_features(backbone, images):
    inputs = backbone.build_inputs(images, PROMPTS)
    state, _ = backbone.prefill(inputs)
    n_image_tokens = state.image_mask.sum(-1)
    assert (n_image_tokens > 0).all()
    # Image positions carry vision features, not the placeholder token's embedding.
    placeholder = backbone.embed_tokens(torch.tensor([backbone.image_token_id]))[0]
    assert not torch.allclose(state.inputs_embeds[state.image_mask][0], placeholder)
    text_rows = state.inputs_embeds[~state.image_mask & inputs["attention_mask"].bool()]
    torch.testing.assert_close(text_rows, backbone.embed_tokens(inputs["input_ids"][~state.image_mask
                                                                                     & inputs["attention_mask"].bool()]))


def test_layer_outputs_are_decoder_layer_outputs(backbone, images):
    inputs = backbone.build_inputs(images, PROMPTS)
    layers = backbone.decoder_layers()
    _, result = backbone.prefill(inputs, capture_layers=[0, len(layers) - 1])
    assert set(result.layer_outputs) == {0, len(layers) - 1}
    last = result.layer_outputs[len(layers) - 1]
    # The final norm applied to the last layer's output is the model's last hidden state.
    torch.testing.assert_close(backbone.language_model.norm(last), result.last_hidden, atol=ATOL, rtol=0)


def test_attention_probe_equals_eager_attention(tiny_model_dirs, images):
    """The probed row (last query over all keys, mean over layers and heads) equals what eager
    attention returns with output_attentions, while the model itself ran with sdpa."""
    from harness.backbones import load_backbone

    for family, path in tiny_model_dirs.items():
        sdpa = load_backbone(str(path), device="cpu", dtype="float32", attn_implementation="sdpa")
        eager = load_backbone(str(path), device="cpu", dtype="float32", attn_implementation="eager")
        inputs = sdpa.build_inputs(images, PROMPTS)
        _, probed = sdpa.prefill(inputs, probe_attention=True)
        with torch.no_grad():
            out = eager.model(**inputs, output_attentions=True)
        expected = torch.stack([a[:, :, -1, :] for a in out.attentions]).mean(dim=(0, 2))
        torch.testing.assert_close(probed.query_attention, expected, atol=1e-5, rtol=0)
        # And after a cached append of one embedding, the row covers the grown sequence.
        state, _ = sdpa.prefill(inputs)
        step = sdpa.append(state, torch.randn(2, 1, sdpa.hidden_size), probe_attention=True)
        assert step.query_attention.shape == (2, state.length)
        torch.testing.assert_close(step.query_attention.sum(-1), torch.ones(2))
        padding = inputs["attention_mask"] == 0
        assert padding.any() and (step.query_attention[:, : padding.shape[1]][padding] == 0).all(), "padding gets none"


def test_qwen_mrope_positions(tiny_model_dirs, images):
    from harness.backbones import load_backbone

    mrope = load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32")
    flat = load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32", rope="1d")
    inputs = mrope.build_inputs(images, PROMPTS)
    positions, start = mrope.prefill_positions(inputs)
    assert positions.shape[0] == 3
    image_rows = positions[:, 0][:, mrope.image_positions(inputs["input_ids"])[0]]
    assert not torch.equal(image_rows[1], image_rows[2]), "image tokens get 2-D (height, width) positions"
    assert (start < inputs["input_ids"].shape[1]).all(), "M-RoPE compresses image spans"
    flat_positions, flat_start = flat.prefill_positions(inputs)
    assert torch.equal(flat_positions[0], flat_positions[1]) and torch.equal(flat_positions[1], flat_positions[2])
    torch.testing.assert_close(flat_start, inputs["attention_mask"].sum(-1))
    # Both modes are internally consistent through the cache.
    for backbone in (mrope, flat):
        state, _ = backbone.prefill(inputs)
        assert backbone.append(state, torch.randn(2, 1, backbone.hidden_size)).logits.isfinite().all()


def test_unknown_model_type_and_missing_path_are_clear(tmp_path):
    from harness.backbones import ModelLoadError, load_backbone
    from harness.backbones.tiny import write_tiny_model

    with pytest.raises(ModelLoadError, match="does not exist"):
        load_backbone(str(tmp_path / "nope"))
    text_only = write_tiny_model("qwen2", tmp_path / "llm")
    with pytest.raises(ModelLoadError, match="supported model types"):
        load_backbone(str(text_only))
