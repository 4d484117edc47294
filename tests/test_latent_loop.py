"""harness.latent.loop with a second, minimal policy (Coconut's: feed the last hidden state back, plus
the captured output of layer 0): cached equals reference, the trace records every step; and the
training schedule / freezing helpers."""
from __future__ import annotations

import pytest
import torch

from harness.latent.loop import Chunk, LatentPolicy, LatentTrace, run_latent_loop

PROMPTS = ["What colour is the shape?", "Which shape is shown? Options: (A) circle (B) square (C) triangle"]


class FeedBack(LatentPolicy):
    """Append the final hidden state and the layer-0 output at the last position; sample 1 skips the
    second embedding at odd steps (a masked slot), so padded chunks are exercised."""

    capture_layers = (0,)

    def start(self, prompt) -> None:
        self.batch = prompt.inputs_embeds.shape[0]

    def step(self, index, query):
        assert query.attention is None and set(query.layers) == {0}
        embeds = torch.stack([query.layers[0], query.hidden], dim=1)
        mask = torch.ones(self.batch, 2, dtype=torch.long)
        if index % 2 == 1:
            mask[1, 0] = 0
        return Chunk(embeds=embeds, mask=mask, record={"latents": query.hidden})


def test_a_new_policy_runs_cached_and_reference_alike(backbone, images):
    inputs = backbone.build_inputs(images, PROMPTS)
    cached = run_latent_loop(backbone, inputs, FeedBack(), 3)
    reference = run_latent_loop(backbone, inputs, FeedBack(), 3, mode="reference")
    assert cached.trace.steps == reference.trace.steps == 3 and cached.trace.appended == 6
    for a, b in zip(cached.trace.latents, reference.trace.field("latents")):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached.state.logits, reference.state.logits, atol=5e-5, rtol=0)
    torch.testing.assert_close(cached.state.next_position, reference.state.next_position)
    assert reference.embeds.shape[1] == inputs["input_ids"].shape[1] + 6


def test_loop_arguments_are_checked(backbone, images):
    inputs = backbone.build_inputs(images, PROMPTS)
    with pytest.raises(ValueError, match="unknown loop mode"):
        run_latent_loop(backbone, inputs, FeedBack(), 1, mode="fast")
    with pytest.raises(ValueError, match="without gradients"):
        run_latent_loop(backbone, inputs, FeedBack(), 1, mode="reference", grad=True)
    with pytest.raises(AttributeError):
        LatentTrace().selected


def test_schedule_counts_stages_past_the_last():
    from harness.api.recipe import Schedule

    schedule = Schedule((2, 1, 3))
    assert schedule.total == 6
    assert [schedule.stage_of(e) for e in range(10)] == [0, 0, 1, 2, 2, 2, 3, 3, 3, 4]
    assert [Schedule((4,) * 4).stage_of(e) for e in (0, 3, 4, 15, 16, 20)] == [0, 0, 1, 3, 4, 5]
    with pytest.raises(ValueError):
        Schedule((1, 0))


def test_frozen_names_switch_grouped_parameters_only():
    from torch import nn

    from harness.train.loop import _apply_frozen

    module = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    module[2].requires_grad_(False)
    grouped = {id(p) for p in [*module[0].parameters(), *module[1].parameters()]}
    _apply_frozen(module, grouped, ("1",))
    assert [p.requires_grad for p in module.parameters()] == [True, True, False, False, False, False]
    _apply_frozen(module, grouped, ())
    assert [p.requires_grad for p in module.parameters()] == [True, True, True, True, False, False]


def test_ivt_lr_recipe_upgrades_a_saved_identity():
    from harness.api.recipe import TrainConfig
    from methods.ivt_lr.train import IVTLRRecipe

    recipe = IVTLRRecipe(TrainConfig(method="ivt-lr", bench="m3cot", model="m", data="d", out="o"))
    saved = {"model": "m", "epochs_per_stage": 2, "options": {"positions": "native", "top_k_patches": 4}}
    # (the ablations did not exist then: they were at their defaults; images were fed as they came; the
    # prompt was ours)
    assert recipe.upgrade_identity(saved) == {"model": "m", "options": {
        "rope": "mrope", "top_k_patches": 4, "epochs_per_stage": 2,
        "patch_choice": "attention", "patch_reuse": False, "latent_text": True, "image_size": 0,
        "prompt": "harness"}}
    assert recipe.schedule().stage_epochs == (4, 4, 4, 4)
