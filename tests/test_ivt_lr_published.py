"""IVT-LR against an implementation of the published loop that shares no code with ours.

What the published code (FYYDCC/IVT-LR) does, written here from plain transformers calls only: the
model in eager attention, a full forward from position 0 at every step with ``output_attentions``,
1-D positions, the last position's attention row averaged over layers and heads, the top-k image
positions never chosen before (in image order), their input embeddings and the final-norm last
hidden state appended, K times; then greedy decoding by full recomputation. Our cached loop (probe
attention through sdpa, KV cache, position helpers, ``top_k_positions``) must pick the same patches,
give the same latents and decode the same tokens. A shared bug in our helpers cannot pass this.
"""
from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

K, TOP_K, NEW_TOKENS = 3, 4, 6


def _image():
    image = Image.new("RGB", (112, 112), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.ellipse([10, 14, 70, 80], fill=(200, 40, 40))
    draw.rectangle([60, 60, 104, 100], fill=(30, 60, 210))
    return image


@pytest.fixture(scope="module")
def models(tiny_model_dirs):
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    from harness.backbones import load_backbone

    path = str(tiny_model_dirs["qwen2-vl"])
    eager = Qwen2VLForConditionalGeneration.from_pretrained(path, attn_implementation="eager",
                                                            dtype=torch.float32).eval()
    return eager, AutoProcessor.from_pretrained(path), load_backbone(path, device="cpu", dtype="float32", rope="1d")


def _published_loop(model, inputs, image_token_id, targets=None):
    """The published loop, batch of one: (chosen positions per step, latents per step, decoded ids);
    with ``targets`` (token ids) instead: the cross-entropy of one full forward of
    ``prompt V1 h1 ... VK hK targets`` on the targets."""
    lm = model.model.language_model
    ids = inputs["input_ids"]
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        features = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        features = torch.cat(list(features.pooler_output if hasattr(features, "pooler_output") else features))
        image_mask = ids[0] == image_token_id
        embeds[0, image_mask] = features.to(embeds.dtype)
        prompt_embeds, prompt_len = embeds.clone(), ids.shape[1]
        image_positions = torch.nonzero(image_mask).flatten()
        used: set[int] = set()
        sequence, chosen_steps, latents = embeds, [], []

        def forward(seq):
            n = seq.shape[1]
            positions = torch.arange(n)[None, None].expand(3, 1, n)  # 1-D: the same index in every section
            return lm(inputs_embeds=seq, position_ids=positions, attention_mask=torch.ones(1, n, dtype=torch.long),
                      output_attentions=True, use_cache=False)

        for _ in range(K):
            out = forward(sequence)
            row = torch.stack([a[0, :, -1, :prompt_len] for a in out.attentions]).mean(dim=(0, 1))
            candidates = [int(p) for p in image_positions if int(p) not in used]
            ranked = sorted(candidates, key=lambda p: -float(row[p]))[:TOP_K]
            chosen = sorted(ranked)  # image order
            used.update(chosen)
            latent = out.last_hidden_state[0, -1]
            chosen_steps.append(chosen)
            latents.append(latent)
            sequence = torch.cat([sequence, prompt_embeds[:, chosen], latent[None, None]], dim=1)
        if targets is not None:
            full = torch.cat([sequence, model.get_input_embeddings()(torch.tensor([targets]))], dim=1)
            logits = model.lm_head(forward(full).last_hidden_state)[0]
            start = sequence.shape[1] - 1  # the position after hK predicts the first target
            predicted = logits[start:start + len(targets)].float()
            return torch.nn.functional.cross_entropy(predicted, torch.tensor(targets))
        decoded = []
        for _ in range(NEW_TOKENS):
            hidden = forward(sequence).last_hidden_state[:, -1]
            token = int(model.lm_head(hidden).argmax(-1))
            decoded.append(token)
            sequence = torch.cat([sequence, model.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
    return chosen_steps, latents, decoded


def test_cached_loop_equals_the_published_loop(models):
    from harness.latent.decode import decode
    from harness.latent.loop import run_latent_loop
    from methods.ivt_lr.policy import IVTLRPolicy

    eager, processor, backbone = models
    prompt = "Which shape is larger? Answer:"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[_image()], return_tensors="pt")
    ours_inputs = backbone.build_inputs([[_image()]], [prompt])
    assert torch.equal(inputs["input_ids"], ours_inputs["input_ids"]), "both read the same tokens"

    chosen_steps, latents, decoded = _published_loop(eager, inputs, eager.config.image_token_id)
    loop = run_latent_loop(backbone, ours_inputs, IVTLRPolicy(TOP_K), K)
    for step, expected in zip(loop.trace.selected, chosen_steps):
        assert step[0].tolist() == expected
    assert len({p for step in chosen_steps for p in step}) == K * TOP_K  # distinct: the check has teeth
    for ours, theirs in zip(loop.trace.latents, latents):
        torch.testing.assert_close(ours[0], theirs, atol=2e-5, rtol=0)
    ids = decode(backbone, loop.state, NEW_TOKENS)[0]
    assert ids[:len(decoded)] == decoded[:len(ids)] and len(ids) >= 1


def test_the_check_sees_a_wrong_position_rule(models):
    """With M-RoPE positions on our side the published (1-D) loop disagrees: the comparison can fail."""
    from harness.backbones import load_backbone
    from harness.latent.loop import run_latent_loop
    from methods.ivt_lr.policy import IVTLRPolicy

    eager, processor, backbone = models
    mrope = load_backbone(backbone.model_id, device="cpu", dtype="float32", rope="mrope")
    prompt = "Which shape is larger? Answer:"
    inputs = mrope.build_inputs([[_image()]], [prompt])
    _, latents, _ = _published_loop(eager, inputs, eager.config.image_token_id)
    loop = run_latent_loop(mrope, inputs, IVTLRPolicy(TOP_K), K)
    assert (loop.trace.latents[-1][0] - latents[-1]).abs().max() > 1e-3


def test_training_loss_equals_cross_entropy_over_one_full_forward(models):
    """IVTLRModel's loss (cached loop with the graph, targets appended through the cache) equals a
    plain cross-entropy over one eager forward of the whole published sequence."""
    from methods.ivt_lr.model import IVTLRModel

    eager, processor, backbone = models
    prompt = "Which shape is larger? Answer:"
    inputs = backbone.build_inputs([[_image()]], [prompt])
    targets = backbone.tokenizer.encode("the red circle", add_special_tokens=False) + [backbone.eos_token_ids[0]]
    target_ids = torch.tensor([targets])
    loss = IVTLRModel(backbone, top_k=TOP_K)(inputs, K, target_ids, torch.ones_like(target_ids), target_ids.clone())
    expected = _published_loop(eager, inputs, eager.config.image_token_id, targets=targets)
    torch.testing.assert_close(loss["ce"].detach(), expected, atol=1e-4, rtol=0)
    shifted = _published_loop(eager, inputs, eager.config.image_token_id, targets=targets[1:] + targets[:1])
    assert abs(float(shifted) - float(expected)) > 1e-3  # other targets, another loss: the check can fail


def test_probe_rows_after_appends_equal_eager_attention(models):
    """The attention row our probe gives after cached appends (what steps 2..K select from) equals the
    last row of eager attention over the whole sequence, computed from scratch."""
    eager, processor, backbone = models
    inputs = backbone.build_inputs([[_image()]], ["Which shape is larger? Answer:"])
    torch.manual_seed(0)
    extra = torch.randn(1, 5, backbone.hidden_size)
    state, _ = backbone.prefill(inputs)
    backbone.append(state, extra[:, :2])
    probed = backbone.append(state, extra[:, 2:], probe_attention=True).query_attention[0]
    with torch.no_grad():
        ids = inputs["input_ids"]
        embeds = eager.get_input_embeddings()(ids)
        features = eager.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        features = torch.cat(list(features.pooler_output if hasattr(features, "pooler_output") else features))
        embeds[0, ids[0] == eager.config.image_token_id] = features
        sequence = torch.cat([embeds, extra], dim=1)
        n = sequence.shape[1]
        out = eager.model.language_model(inputs_embeds=sequence, position_ids=torch.arange(n)[None, None].expand(3, 1, n),
                                         attention_mask=torch.ones(1, n, dtype=torch.long), output_attentions=True)
    expected = torch.stack([a[0, :, -1, :] for a in out.attentions]).mean(dim=(0, 1))
    torch.testing.assert_close(probed, expected, atol=1e-5, rtol=0)
