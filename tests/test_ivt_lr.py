"""IVT-LR inference mechanism: the KV-cached loop equals full recomputation; patch selection; batching."""
from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from harness.latent.decode import decode
from harness.latent.select import top_k_positions
from methods.ivt_lr.policy import latent_loop_cached, latent_loop_reference

PROMPTS = ["What colour is the shape?", "Which shape is shown? Options: (A) circle (B) square (C) triangle"]
ATOL = 1e-5  # fp32 on CPU, latents (final-norm hidden states)
LOGIT_ATOL = 5e-5  # logits of the tiny models reach ~±10 (initializer_range 0.2)


def _shape(size, colour):
    image = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(image).ellipse([8, 8, size[0] - 8, size[1] - 8], fill=colour)
    return image


@pytest.fixture(scope="module")
def big_images():
    # 112x112 → 16 merged Qwen2-VL image tokens, 84x112 → 12: room for several steps of distinct patches.
    return [[_shape((112, 112), (220, 30, 30))], [_shape((84, 112), (30, 30, 220))]]


@pytest.fixture(scope="module", params=[("qwen2-vl", "1d"), ("qwen2-vl", "mrope"), ("llava", "mrope")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def ivt_backbone(request, tiny_model_dirs):
    from harness.backbones import load_backbone

    family, rope = request.param
    return load_backbone(str(tiny_model_dirs[family]), device="cpu", dtype="float32", rope=rope)


@pytest.mark.parametrize("top_k", [3, 5])
def test_cached_loop_equals_reference_recomputation(ivt_backbone, big_images, top_k):
    """Same patches, same latents (fp32), same answer tokens; top_k=5 runs the 12-token image out of
    patches at step 3, so padded chunks are exercised too."""
    inputs = ivt_backbone.build_inputs(big_images, PROMPTS)
    assert inputs["attention_mask"][0].sum() != inputs["attention_mask"][1].sum(), "batch must exercise padding"
    cached_state, cached = latent_loop_cached(ivt_backbone, inputs, 3, top_k)
    reference_state, reference, _ = latent_loop_reference(ivt_backbone, inputs, 3, top_k)
    for a, b in zip(cached.selected, reference.selected):
        assert torch.equal(a, b)
    for a, b in zip(cached.latents, reference.latents):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    torch.testing.assert_close(cached_state.logits, reference_state.logits, atol=LOGIT_ATOL, rtol=0)
    assert decode(ivt_backbone, cached_state, 8) == decode(ivt_backbone, reference_state, 8)


def test_selected_patches_are_distinct_image_positions(ivt_backbone, big_images):
    inputs = ivt_backbone.build_inputs(big_images, PROMPTS)
    state, trace = latent_loop_cached(ivt_backbone, inputs, 3, 5)
    image_mask = state.image_mask
    for b in range(2):
        chosen = torch.cat([step[b][step[b] >= 0] for step in trace.selected])
        assert len(chosen) == len(set(chosen.tolist())), "a patch is never chosen twice"
        assert image_mask[b, chosen].all(), "only image positions are chosen"
        assert len(chosen) == min(15, int(image_mask[b].sum()))


def test_a_batch_equals_each_sample_alone(ivt_backbone, big_images):
    batch = ivt_backbone.build_inputs(big_images, PROMPTS)
    state, trace = latent_loop_cached(ivt_backbone, batch, 3, 5)
    decoded = decode(ivt_backbone, state, 6)
    for b in range(2):
        alone = ivt_backbone.build_inputs([big_images[b]], [PROMPTS[b]])
        state1, trace1 = latent_loop_cached(ivt_backbone, alone, 3, 5)
        for step_batch, step_alone in zip(trace.selected, trace1.selected):
            left_padding = (batch["attention_mask"][b] == 0).sum()
            picked_batch = step_batch[b][step_batch[b] >= 0] - left_padding
            assert torch.equal(picked_batch, step_alone[0][step_alone[0] >= 0])
        for latent_batch, latent_alone in zip(trace.latents, trace1.latents):
            torch.testing.assert_close(latent_batch[b], latent_alone[0], atol=ATOL, rtol=0)
        assert decode(ivt_backbone, state1, 6)[0] == decoded[b]


def test_latents_and_patches_land_where_expected(tiny_model_dirs, big_images):
    from harness.backbones import load_backbone

    backbone = load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32", rope="1d")
    inputs = backbone.build_inputs(big_images[:1], PROMPTS[:1])
    state, trace, embeds = latent_loop_reference(backbone, inputs, 3, 4)
    prompt_len = inputs["input_ids"].shape[1]
    prefill_state, _ = backbone.prefill(inputs)
    assert embeds.shape[1] == prompt_len + 3 * (4 + 1)
    for step in range(3):
        start = prompt_len + step * 5
        torch.testing.assert_close(embeds[0, start:start + 4], prefill_state.inputs_embeds[0, trace.selected[step][0]])
        torch.testing.assert_close(embeds[0, start + 4], trace.latents[step][0])
    # The first latent is the prompt's last final-norm hidden state; the next ones that of the previous latent slot.
    torch.testing.assert_close(trace.latents[0], prefill_state.last_hidden)
    full = backbone.forward_embeds(embeds, torch.ones(1, embeds.shape[1], dtype=torch.long),
                                   backbone.concat_positions(*[backbone.prefill_positions(inputs)[0],
                                                               backbone.text_positions(state.next_position - 15, 15)]))
    torch.testing.assert_close(full.last_hidden[0, prompt_len + 4], trace.latents[1][0], atol=ATOL, rtol=0)
    torch.testing.assert_close(full.logits[:, -1], state.logits, atol=LOGIT_ATOL, rtol=0)


def test_top_k_positions_definition():
    row = torch.tensor([[0.30, 0.05, 0.20, 0.11, 0.25, 0.09], [0.1, 0.2, 0.3, 0.1, 0.2, 0.1]])
    available = torch.tensor([[False, True, True, True, True, True], [True, False, False, False, True, False]])
    index, valid = top_k_positions(row, available, 3)
    # Sample 0: position 0 (0.30) is used up; the best available are 4, 2, 3, returned in position order.
    assert index[0].tolist() == [2, 3, 4] and valid[0].all()
    # Sample 1 has only two available positions: the third slot is padding.
    assert index[1, :2].tolist() == [0, 4] and valid[1].tolist() == [True, True, False]


def test_rope_modes_change_the_latents(tiny_model_dirs, big_images):
    from harness.backbones import load_backbone

    path = str(tiny_model_dirs["qwen2-vl"])
    latents = {}
    for mode in ("mrope", "1d"):
        backbone = load_backbone(path, device="cpu", dtype="float32", rope=mode)
        _, trace = latent_loop_cached(backbone, backbone.build_inputs(big_images[:1], PROMPTS[:1]), 2, 3)
        latents[mode] = trace.latents[-1]
    assert (latents["mrope"] - latents["1d"]).abs().max() > 1e-3


def test_method_options_and_outputs(tiny_model_dirs, big_images):
    from harness.api import Query
    from harness.backbones import load_backbone
    from harness.api import METHODS

    cls = METHODS.get("ivt-lr")
    with pytest.raises(ValueError, match="unknown mode"):
        cls(mode="fast")
    method = cls(latent_steps=2, top_k_patches=3, max_new_tokens=5)
    assert method.backbone_options() == {"rope": "1d"}
    backbone = load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32",
                             **method.backbone_options())
    queries = [Query(images=imgs, question=p, choices=[]) for imgs, p in zip(big_images, PROMPTS)]
    cached = method(backbone, queries)
    reference = cls(latent_steps=2, top_k_patches=3, max_new_tokens=5, mode="reference")(backbone, queries)
    for a, b in zip(cached, reference):
        assert a.text == b.text and a.latent_steps == 2 and a.extra["patches_per_step"] == [3, 3]
        assert 0 < a.generated_tokens <= 5, "only decoded answer tokens are counted"
