"""harness.latent.decode: seeded sampling, top-p, stop tokens, and the switch hook (decode, hand
control to a callback that appends embeddings, resume), checked against one full forward."""
from __future__ import annotations

import pytest
import torch

from harness.latent.decode import Sampling, decode, next_tokens, top_p_filter
from harness.latent.loop import Chunk

PROMPTS = ["What colour is the shape?", "Which shape is shown? Options: (A) circle (B) square (C) triangle"]


@pytest.fixture(scope="module")
def qwen(tiny_model_dirs):
    from harness.backbones import load_backbone

    return load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32")


def _state(backbone, images, n=2):
    state, _ = backbone.prefill(backbone.build_inputs(images[:n], PROMPTS[:n]))
    return state


def test_top_p_by_hand():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    # Sorted: 0.5, 0.3, 0.15, 0.05; mass before each: 0, 0.5, 0.8, 0.95. top_p 0.85 keeps the first three.
    torch.testing.assert_close(top_p_filter(probs, 0.85), torch.tensor([[0.15, 0.5, 0.0, 0.3]]) / 0.95)
    torch.testing.assert_close(top_p_filter(probs, 0.5), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(top_p_filter(probs, 1.0), probs)
    # Sampling from that distribution never leaves the nucleus.
    logits = probs.log().expand(4000, -1)
    drawn = next_tokens(logits, Sampling(temperature=1.0, top_p=0.85, seed=1), torch.Generator().manual_seed(1))
    counts = torch.bincount(drawn, minlength=4).float() / len(drawn)
    assert counts[2] == 0
    torch.testing.assert_close(counts, torch.tensor([0.15, 0.5, 0.0, 0.3]) / 0.95, atol=0.03, rtol=0)


def test_sampling_options_are_checked():
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(temperature=1, top_p=0)


def test_sampling_is_reproducible_with_a_seed(qwen, images):
    def run(seed):
        return decode(qwen, _state(qwen, images), 12, sampling=Sampling(temperature=3.0, top_p=0.95, seed=seed))

    assert run(7) == run(7)
    assert any(run(seed) != run(7) for seed in (8, 9, 10)), "another seed draws other tokens"
    assert run(7) != decode(qwen, _state(qwen, images), 12), "temperature 3 is not greedy"


def test_stop_tokens(qwen, images):
    plain = decode(qwen, _state(qwen, images), 10)
    stop = plain[0][2]
    cut = plain[0].index(stop)
    stopped = decode(qwen, _state(qwen, images), 10, stop_tokens=[stop])
    assert stopped[0][:cut + 1] == plain[0][:cut + 1]
    assert all(t == qwen.pad_token_id for t in stopped[0][cut + 1:])
    if stop not in plain[1]:
        assert stopped[1] == plain[1][:len(stopped[1])], "a sample that never emits the stop token is untouched"


def _switcher(backbone, calls, n=2):
    extra = torch.randn(n, backbone.hidden_size, generator=torch.Generator().manual_seed(0))

    def on_switch(state, which):
        calls.append(which.clone())
        return Chunk(embeds=extra[None].expand(which.shape[0], -1, -1).clone())

    return on_switch, extra


def test_switch_hook_resumes_decoding_after_the_appended_embeddings(qwen, images):
    inputs = qwen.build_inputs(images[:1], PROMPTS[:1])
    plain = decode(qwen, qwen.prefill(inputs)[0], 10)[0]
    control = plain[1]
    calls = []
    on_switch, extra = _switcher(qwen, calls)
    state, _ = qwen.prefill(inputs)
    ids = decode(qwen, state, 10, switch_token=control, on_switch=on_switch)[0]
    assert calls and ids[:2] == plain[:2]

    # One cache-free forward over prompt + tokens, with the callback's embeddings after each control token.
    pieces, predicts = [state.inputs_embeds[0]], []  # predicts[j]: index of the slot whose logits chose ids[j]
    length = state.inputs_embeds.shape[1]
    eos = set(qwen.eos_token_ids)
    for j, token in enumerate(ids):
        predicts.append(length - 1)
        if token in eos:
            break
        pieces.append(qwen.embed_tokens(torch.tensor([token])))
        length += 1
        if token == control:
            pieces.append(extra)
            length += extra.shape[0]
    embeds = torch.cat(pieces)[None]
    prompt_positions, start = qwen.prefill_positions(inputs)
    n = embeds.shape[1] - prompt_positions.shape[-1]
    positions = qwen.concat_positions(prompt_positions, qwen.text_positions(start, n))
    full = qwen.forward_embeds(embeds, torch.ones(1, embeds.shape[1], dtype=torch.long), positions)
    assert full.logits[0, predicts].argmax(-1).tolist() == ids[:len(predicts)]
    assert len(calls) == sum(1 for t in ids[:len(predicts)] if t == control and t not in eos)


def test_switch_hook_in_a_batch_equals_each_sample_alone(qwen, images):
    batch_plain = decode(qwen, _state(qwen, images), 10)
    control = batch_plain[0][1]
    calls = []
    on_switch, _ = _switcher(qwen, calls, n=3)
    together = decode(qwen, _state(qwen, images), 10, switch_token=control, on_switch=on_switch)
    assert calls
    for b in range(2):
        alone_state, _ = qwen.prefill(qwen.build_inputs(images[b:b + 1], PROMPTS[b:b + 1]))
        alone = decode(qwen, alone_state, 10, switch_token=control, on_switch=on_switch)[0]
        assert qwen.finish(together[b], 0).token_ids == qwen.finish(alone, 0).token_ids
