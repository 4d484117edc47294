"""IVT-LR's latent loop in one place: used by inference (``method.py``) and training (``IVTLRModel``).

One latent step (paper: latent text + latent vision), for every sample of the batch:

1. the query position is the last position of the sequence so far (the prompt's last token, then
   each latent slot);
2. latent vision: the ``top_k`` image positions of the prompt with the highest attention from the
   query position (the attention row averaged over all layers and heads), never one chosen at an
   earlier step; their *input* embeddings (vision-encoder outputs) are taken, in image order;
3. latent text: the final-norm last hidden state at the query position;
4. both are appended, patches first: ``prompt [V1] h1 [V2] h2 ... [VK] hK`` (K * (top_k + 1) embeddings).

After K steps the state's logits (at ``hK``) start greedy decoding of the answer.

Two equivalent implementations:

* :func:`latent_loop_cached` appends each step's ``top_k + 1`` embeddings to the KV cache and asks
  the backbone only for the last query's attention row (``probe_attention``), never for eager
  attention over the whole model;
* :func:`latent_loop_reference` recomputes the whole sequence from position 0 at every step, as the
  published code does; ``tests/test_ivt_lr.py`` checks that both pick the same patches and produce
  the same latents and answers.

A sample whose image has fewer than ``top_k`` unused patches left appends fewer; in a batch its chunk
is padded with masked slots that take no position, so each sample sees exactly what it would alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

LATENT_TOKENS = ("<|start-latent|>", "<|end-latent|>", "<|latent|>")  # the published vocabulary additions


@dataclass
class LatentTrace:
    """What the loop did, per step: the chosen prefill positions and the latent embeddings fed."""

    selected: list[torch.Tensor] = field(default_factory=list)  # [B, n_step] prefill positions, -1 = padding
    latents: list[torch.Tensor] = field(default_factory=list)  # [B, D] the latent-text embedding appended
    appended: int = 0  # width of the appended tail (padding included)


def select_patches(attention_row: torch.Tensor, available: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top_k`` available positions with the highest attention, per sample, in ascending position.

    ``attention_row`` [B, T] and ``available`` [B, T] (True = an unused image position). Returns
    ``index`` [B, n] and ``valid`` [B, n] with n = the most any sample could take (<= top_k); a
    sample with fewer available positions gets invalid (padding) entries at the end.
    """
    n = min(top_k, attention_row.shape[1])
    scores = attention_row.detach().float().masked_fill(~available, float("-inf"))
    top = scores.topk(n, dim=-1).indices  # [B, n]
    valid = available.gather(1, top)
    # Image order (ascending position) for the chosen patches, padding last.
    key = torch.where(valid, top, torch.full_like(top, attention_row.shape[1]))
    key, order = key.sort(dim=-1)
    valid = valid.gather(1, order)
    width = int(valid.sum(-1).max()) if valid.numel() else 0
    index = torch.where(valid, key, torch.zeros_like(key))[:, :width]
    return index, valid[:, :width]


def _step_chunk(prompt_embeds: torch.Tensor, index: torch.Tensor, valid: torch.Tensor,
                latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[patches..., latent] embeddings [B, n+1, D] and their mask [B, n+1]."""
    dim = prompt_embeds.shape[-1]
    patches = prompt_embeds.gather(1, index[..., None].expand(-1, -1, dim))
    chunk = torch.cat([patches, latent[:, None].to(patches.dtype)], dim=1)
    mask = torch.cat([valid, valid.new_ones(valid.shape[0], 1)], dim=1).long()
    return chunk, mask


def _mark_used(available: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    used = torch.zeros_like(available).scatter_(1, index, valid)
    return available & ~used


def latent_loop_cached(backbone, inputs, steps: int, top_k: int, *, grad: bool = False,
                       grad_through_latents: bool = False):
    """K latent steps through the KV cache. Returns (DecodeState after ``hK``, LatentTrace).

    ``grad=True`` keeps the graph (training). ``grad_through_latents`` lets gradients flow from a
    latent back into the forward that produced it (Coconut); the published IVT-LR code feeds
    latents as constants (False).
    """
    state, first = backbone.prefill(inputs, probe_attention=steps > 0, grad=grad)
    available = state.image_mask.clone()
    prompt_len = available.shape[1]
    row, trace = first.query_attention, LatentTrace()
    for step in range(steps):
        latent = state.last_hidden if grad_through_latents else state.last_hidden.detach()
        index, valid = select_patches(row[:, :prompt_len], available, top_k)
        available = _mark_used(available, index, valid)
        chunk, mask = _step_chunk(state.inputs_embeds, index, valid, latent)
        result = backbone.append(state, chunk, mask=mask, probe_attention=step < steps - 1, grad=grad)
        row = result.query_attention
        trace.selected.append(torch.where(valid, index, torch.full_like(index, -1)))
        trace.latents.append(latent)
        trace.appended += chunk.shape[1]
    return state, trace


@torch.no_grad()
def latent_loop_reference(backbone, inputs, steps: int, top_k: int):
    """The same K steps, recomputing the whole sequence from position 0 at every step (no KV cache
    reuse), as the published code does. Returns (DecodeState after ``hK``, LatentTrace, the full
    embedded sequence [B, T, D])."""
    state, first = backbone.prefill(inputs, probe_attention=steps > 0)
    prompt_embeds, prompt_mask = state.inputs_embeds, inputs["attention_mask"]
    prompt_positions, start = backbone.prefill_positions(inputs)
    available = state.image_mask.clone()
    prompt_len = available.shape[1]
    row, latent, trace = first.query_attention, state.last_hidden, LatentTrace()
    chunks, masks = [], []
    embeds = prompt_embeds
    for step in range(steps):
        index, valid = select_patches(row[:, :prompt_len], available, top_k)
        available = _mark_used(available, index, valid)
        chunk, mask = _step_chunk(prompt_embeds, index, valid, latent)
        trace.selected.append(torch.where(valid, index, torch.full_like(index, -1)))
        trace.latents.append(latent)
        trace.appended += chunk.shape[1]
        chunks.append(chunk)
        masks.append(mask)
        embeds = torch.cat([prompt_embeds, *chunks], dim=1)
        tail_mask = torch.cat(masks, dim=1)
        positions = backbone.concat_positions(prompt_positions, backbone.appended_positions(start, tail_mask))
        full_mask = torch.cat([prompt_mask, tail_mask.to(prompt_mask.dtype)], dim=1)
        if step < steps - 1:
            result = backbone.forward_embeds(embeds, full_mask, positions, probe_attention=True)
            row, latent = result.query_attention, result.last_hidden[:, -1]
        else:  # the final full forward also fills a cache for decoding the answer
            state = backbone.prefill_embeds(embeds, full_mask, positions, start + tail_mask.sum(-1))
    return state, trace, embeds


class IVTLRModel(nn.Module):
    """The training wrapper: one ``forward(batch) -> loss`` around the backbone's model, so that
    ``accelerate`` (DDP, DeepSpeed) sees every forward go through a prepared module.

    A batch (``harness.train.ivt_lr``) holds the left-padded prompt inputs, the number of latent
    slots of its stage, and the right-padded target tokens (remaining rationale steps + answer) with
    their labels. The loss is next-token cross-entropy on the targets only: question and latent
    positions carry no labels.
    """

    def __init__(self, backbone, *, top_k: int, grad_through_latents: bool = False):
        super().__init__()
        self.model = backbone.model  # registered: its parameters are what the optimizer trains
        self.backbone = backbone  # plain attribute: the interface the loop speaks to
        self.top_k = top_k
        self.grad_through_latents = grad_through_latents

    def forward(self, inputs, n_latent: int, target_ids: torch.Tensor, target_mask: torch.Tensor,
                labels: torch.Tensor, return_trace: bool = False):
        backbone = self.backbone
        state, trace = latent_loop_cached(backbone, inputs, n_latent, self.top_k, grad=True,
                                          grad_through_latents=self.grad_through_latents)
        first_logits = state.logits  # at the last prompt / latent position: predicts the first target
        result = backbone.append(state, backbone.embed_tokens(target_ids), mask=target_mask, grad=True)
        logits = torch.cat([first_logits[:, None], result.logits[:, :-1]], dim=1).float()
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=-100)
        return (loss, trace) if return_trace else loss
