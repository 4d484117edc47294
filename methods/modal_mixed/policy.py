"""Inference: the latent layer's decoder writes text; its switch hook writes the sketches.

When a sample emits ``<|sketch|>``, :class:`SketchWriter` runs the head N_s times: each sketch token is
sampled (DDIM, ``--sampler-steps``, classifier-free guidance ``--cfg``) conditioned on the hidden state
at the position before it, un-standardised and appended through the KV cache for the samples that
opened a sketch; then ``<|/sketch|>`` is appended and text resumes. The sketches are part of the
decoding state, not decoded tokens: ``generated_tokens`` counts text (and the open token), the sketch
tokens are counted apart.

Each sample's noise comes from its own generator, seeded by (``--seed``, the sample's prompt, which
sketch, which token), so a sample's sketches do not depend on its batch neighbours.
"""
from __future__ import annotations

import zlib

import torch

from harness.latent.decode import append_for
from harness.latent.loop import Chunk


class SketchWriter:
    def __init__(self, backbone, head, standardizer, n_tokens: int, close_id: int, prompts: list[str], *,
                 sampler_steps: int = 50, cfg: float = 1.0, seed: int = 0):
        self.backbone, self.head, self.standardizer = backbone, head, standardizer
        self.n_tokens, self.close_id = n_tokens, close_id
        self.steps, self.cfg = sampler_steps, cfg
        self.seeds = [seed * 1_000_003 + zlib.crc32(p.encode()) for p in prompts]
        self.segments = [0] * len(prompts)  # sketches written per sample
        self.tokens: list[list[torch.Tensor]] = [[] for _ in prompts]  # the appended sketch vectors (kept for tests)

    def sketch_token(self, cond: torch.Tensor, rows: list[int], k: int) -> torch.Tensor:
        """One sketch token [len(rows), D] for ``rows``, each from its own seeded noise."""
        out = []
        for i, row in enumerate(rows):
            generator = torch.Generator(device=cond.device).manual_seed(
                (self.seeds[row] + 7919 * self.segments[row] + k) % 2**63)
            out.append(self.head.sample(cond[i:i + 1].float(), steps=self.steps, cfg=self.cfg, generator=generator))
        return self.standardizer.inverse(torch.cat(out))

    def __call__(self, state, which: torch.Tensor) -> Chunk:
        backbone = self.backbone
        rows = which.nonzero()[:, 0].tolist()
        width = state.last_hidden.shape[-1]
        for k in range(self.n_tokens):
            values = self.sketch_token(state.last_hidden[rows], rows, k)
            embeds = state.last_hidden.new_zeros(len(which), 1, width)
            embeds[rows, 0] = values.to(embeds.dtype)
            append_for(backbone, state, Chunk(embeds), which)
            for i, row in enumerate(rows):
                self.tokens[row].append(values[i].detach())
        for row in rows:
            self.segments[row] += 1
        close = backbone.embed_tokens(torch.full((len(which), 1), self.close_id, device=which.device))
        return Chunk(close)
