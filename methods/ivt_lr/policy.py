"""IVT-LR as a policy on the latent layer (:mod:`harness.latent`); used by inference and training.

One latent step (paper: latent text + latent vision), for every sample of the batch:

1. the query position is the last position of the sequence so far (the prompt's last token, then
   each latent slot);
2. latent vision: the ``top_k`` image positions of the prompt with the highest attention from the
   query position (the attention row averaged over all layers and heads), never one chosen at an
   earlier step; their *input* embeddings (vision-encoder outputs) are taken, in image order;
3. latent text: the final-norm last hidden state at the query position;
4. both are appended, patches first: ``prompt [V1] h1 [V2] h2 ... [VK] hK`` (K * (top_k + 1) embeddings).

After K steps the state's logits (at ``hK``) start decoding of the answer.

The driver (:func:`harness.latent.loop.run_latent_loop`) runs it through the KV cache (``cached``,
asking the backbone only for the last query's attention row, never for eager attention) or by
recomputing the whole sequence at every step (``reference``, as the published code does);
``tests/test_ivt_lr.py`` checks that both pick the same patches and give the same latents and answers.

Ablations (``patch_choice``, ``patch_reuse``, ``latent_text``): patches chosen at random (a fixed
pseudo-random score per image position and step, so a batch chooses what each sample would alone) or
evenly spaced over the unused image positions instead of by attention; patches that may be chosen again;
no latent text (the chunk is the patches alone). ``top_k=0`` is latent text only.

A sample whose image has fewer than ``top_k`` unused patches left appends fewer; in a batch its chunk
is padded with masked slots that take no position, so each sample sees exactly what it would alone.
"""
from __future__ import annotations

import torch

from harness.latent.loop import Chunk, LatentPolicy, LatentTrace, Query, run_latent_loop
from harness.latent.select import gather_positions, mark_used, top_k_positions


def _pseudo_random(shape, step: int) -> torch.Tensor:
    """A score in [0, 1) per (position, step) that depends on nothing else (batch-invariant)."""
    position = torch.arange(shape[1], dtype=torch.float64)
    value = torch.sin(position * 12.9898 + (step + 1) * 78.233) * 43758.5453
    return (value - value.floor()).float()[None].expand(shape[0], -1)


def _evenly_spaced(available: torch.Tensor, k: int) -> torch.Tensor:
    """Scores that make ``top_k_positions`` pick ``k`` available positions evenly spaced in order."""
    scores = torch.zeros(available.shape)
    for b in range(available.shape[0]):
        free = torch.nonzero(available[b]).flatten()
        if len(free) and k:
            picks = torch.linspace(0, len(free) - 1, min(k, len(free))).round().long()
            scores[b, free[picks]] = 1.0
    return scores


class IVTLRPolicy(LatentPolicy):
    def __init__(self, top_k: int, *, grad_through_latents: bool = False, patch_choice: str = "attention",
                 patch_reuse: bool = False, latent_text: bool = True):
        self.top_k = top_k
        # The published code feeds latents as constants (False); Coconut lets gradients flow (True).
        self.grad_through_latents = grad_through_latents
        self.patch_choice, self.patch_reuse, self.latent_text = patch_choice, patch_reuse, latent_text
        # Attention rows are asked for only when they choose the patches.
        self.needs_attention = patch_choice == "attention" and top_k > 0

    def start(self, prompt) -> None:
        self.prompt_embeds = prompt.inputs_embeds
        self.available = prompt.image_mask.clone()  # unused image positions of the prompt

    def scores(self, index: int, query: Query) -> torch.Tensor:
        prompt_len = self.available.shape[1]
        if self.top_k == 0:  # latent text only: no patch is chosen, no attention was asked for
            return torch.zeros(self.available.shape)
        if self.patch_choice == "attention":
            return query.attention[:, :prompt_len]
        if self.patch_choice == "random":
            return _pseudo_random(self.available.shape, index)
        return _evenly_spaced(self.available.cpu(), self.top_k)

    def step(self, index: int, query: Query) -> Chunk:
        latent = query.hidden if self.grad_through_latents else query.hidden.detach()
        scores = self.scores(index, query).to(self.available.device)
        chosen, valid = top_k_positions(scores, self.available, self.top_k)
        if not self.patch_reuse:
            self.available = mark_used(self.available, chosen, valid)
        patches = gather_positions(self.prompt_embeds, chosen)
        if self.latent_text:
            embeds = torch.cat([patches, latent[:, None].to(patches.dtype)], dim=1)
            mask = torch.cat([valid, valid.new_ones(valid.shape[0], 1)], dim=1).long()
        else:
            embeds, mask = patches, valid.long()
        return Chunk(embeds=embeds, mask=mask,
                     record={"selected": torch.where(valid, chosen, torch.full_like(chosen, -1)), "latents": latent})

    def sample_info(self, trace: LatentTrace, i: int) -> dict:
        return {"patches_per_step": [int((step[i] >= 0).sum()) for step in trace.selected]}


def latent_loop_cached(backbone, inputs, steps: int, top_k: int, *, grad: bool = False,
                       grad_through_latents: bool = False):
    """K IVT-LR steps through the KV cache. Returns (DecodeState after ``hK``, LatentTrace)."""
    loop = run_latent_loop(backbone, inputs, IVTLRPolicy(top_k, grad_through_latents=grad_through_latents), steps,
                           grad=grad)
    return loop.state, loop.trace


def latent_loop_reference(backbone, inputs, steps: int, top_k: int):
    """The same K steps recomputed from position 0 at every step. Returns (DecodeState after ``hK``,
    LatentTrace, the full embedded sequence [B, T, D])."""
    loop = run_latent_loop(backbone, inputs, IVTLRPolicy(top_k), steps, mode="reference")
    return loop.state, loop.trace, loop.embeds
