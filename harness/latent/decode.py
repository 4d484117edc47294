"""Decoding from a state (after a prefill or a latent loop), through the backbone's KV cache.

:func:`decode` is greedy by default (argmax; what every method ran before sampling existed, token for
token), or seeded sampling (``Sampling(temperature, top_p, seed)``). A sample stops at EOS or at one of
``stop_tokens`` (both kept in its ids: the model spent a step on them); finished samples get padding.

The switch hook (modal-mixed CoT): when a sample emits ``switch_token``, that token is appended as usual
and then ``on_switch(state, which)`` is called with ``which`` [B] (the samples that switched); it returns
a :class:`~harness.latent.loop.Chunk` of embeddings (or None), which is appended for those samples only
(the others get masked slots that take no position), and decoding resumes from the chunk's last real
embedding. The switch token and what follows count toward ``max_new_tokens``; the appended embeddings
do not (they are no decoded tokens).

torch is imported inside the functions: methods build :class:`Sampling` (and so check its numbers)
before any model loads, on paths that must stay light.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Sampling:
    """``temperature`` 0 = greedy; otherwise softmax(logits / temperature), cut to the top-p nucleus."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most probable tokens whose mass reaches ``top_p`` (a token is kept
    while the mass of the tokens more probable than it is below ``top_p``; the top one always is),
    renormalised. ``probs`` [B, V]."""
    import torch

    if top_p >= 1:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass strictly more probable than each token
    keep_sorted = before < top_p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


def next_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    import torch

    if sampling.greedy:
        return logits.argmax(-1)
    probs = top_p_filter((logits.float() / sampling.temperature).softmax(-1), sampling.top_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def append_for(backbone, state, chunk, which: torch.Tensor) -> None:
    """Append ``chunk`` for the samples in ``which``; the others keep their logits and last hidden state
    (a switch hook that appends step by step, e.g. one sketch token at a time, calls it itself)."""
    import torch

    embeds = chunk.embeds
    mask = chunk.mask if chunk.mask is not None else which.new_ones(embeds.shape[:2], dtype=torch.long)
    mask = mask.long() * which.long()[:, None]
    logits, hidden = state.logits, state.last_hidden
    result = backbone.append(state, embeds, mask=mask)
    real = mask.bool()
    has_real = real.any(-1)
    # Position of each sample's last real slot: decoding resumes from it (padding slots predict nothing).
    last = torch.where(real, torch.arange(mask.shape[1], device=mask.device), -1).amax(-1).clamp(min=0)
    rows = torch.arange(mask.shape[0], device=mask.device)
    state.logits = torch.where(has_real[:, None], result.logits[rows, last], logits)
    state.last_hidden = torch.where(has_real[:, None], result.last_hidden[rows, last], hidden)


def decode(backbone, state, max_new_tokens: int, *, sampling: Sampling | None = None,
           stop_tokens: Iterable[int] = (), switch_token: int | None = None,
           on_switch: Callable | None = None) -> list[list[int]]:
    """Token ids per sample (padded with the pad token after a sample stops; ``backbone.finish`` cuts)."""
    import torch

    with torch.no_grad():
        return _decode(backbone, state, max_new_tokens, sampling or Sampling(), stop_tokens, switch_token,
                       on_switch)


def _decode(backbone, state, max_new_tokens: int, sampling: Sampling, stop_tokens, switch_token, on_switch):
    import torch

    if (switch_token is None) != (on_switch is None):
        raise ValueError("switch_token and on_switch go together")
    batch = state.logits.shape[0]
    device = state.logits.device
    generator = None
    if not sampling.greedy:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    stops = torch.tensor(sorted({*backbone.eos_token_ids, *stop_tokens}), device=device)
    tokens: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        next_ids = next_tokens(state.logits, sampling, generator)
        next_ids = torch.where(finished, torch.full_like(next_ids, backbone.pad_token_id), next_ids)
        tokens.append(next_ids)
        finished |= torch.isin(next_ids, stops)
        if finished.all():
            break
        backbone.append(state, backbone.embed_tokens(next_ids[:, None]))
        if switch_token is not None:
            which = (next_ids == switch_token) & ~finished
            if which.any():
                chunk = on_switch(state, which)
                if chunk is not None:
                    append_for(backbone, state, chunk, which)
    if not tokens:
        return [[] for _ in range(batch)]
    return torch.stack(tokens, dim=1).tolist()
