"""LaRe's iteration as a policy on the latent layer (:mod:`harness.latent`); inference and training.

Iteration t = 1..T (paper Sec. 3.1, Eqs. 1–2), for every sample of the batch:

1. the LLM has read [V; Q] (t = 1) or [V; Q; <start>; Z_1 .. Z_{t-1}] (the prompt, then the latents so
   far, through the KV cache); H_t = its final-norm hidden states at the last n_z positions (the
   prompt's last n_z tokens at t = 1, then the previous iteration's n_z latents: the "latent query
   positions"). <start> is appended together with Z_1 (no extra forward for a token nothing reads);
2. saliency: the attention row of the last position over the prompt's visual tokens (mean over layers
   and heads: the backbone's probe, never eager attention), laid out on the visual grid row-major;
3. sliding window: the w×w window with the largest summed saliency (sum-pooling, stride 1, argmax;
   :func:`harness.latent.select.sliding_window`); V_loc = the visual tokens (projector outputs, as the
   LLM reads them) under it;
4. the Extractor maps (H_t, V_loc) to Z_t [n_z tokens], appended through the KV cache (t = 1: after
   the <start> token). Gradients flow through the latents in training (the paper trains the T
   iterations as one graph).

After the loop the method appends <end> and decodes. Adaptive stopping (paper Sec. 4.4): from t = 2,
a sample whose mean distance between Z_t and Z_{t-1} (cosine distance, mean absolute difference, or
Euclidean norm, per token then averaged over the n_z tokens) falls below θ stops after appending Z_t;
its later chunks are masked (they take no position), and the loop ends when every sample stopped or at
the maximum.

Ablations: ``no_extractor`` (Z_t = H_t), ``no_window`` (the Extractor reads every visual token).
"""
from __future__ import annotations

import torch

from harness.latent.loop import Chunk, LatentPolicy, LatentTrace, Query
from harness.latent.select import gather_positions, sliding_window

from .options import window_size


def latent_distance(current: torch.Tensor, previous: torch.Tensor, metric: str) -> torch.Tensor:
    """[B] mean over the n_z tokens of the per-token distance between [B, n_z, D] latents."""
    a, b = current.float(), previous.float()
    if metric == "cos":
        per_token = 1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)
    elif metric == "l1":
        per_token = (a - b).abs().mean(-1)
    elif metric == "l2":
        per_token = (a - b).norm(dim=-1)
    else:
        raise ValueError(f"lare: unknown distance {metric!r}; choose cos, l1 or l2")
    return per_token.mean(-1)


def visual_tokens(prompt_embeds: torch.Tensor, image_mask: torch.Tensor):
    """The prompt's visual tokens in sequence order: (positions [B, N], mask [B, N], features [B, N, D])."""
    counts = image_mask.sum(-1)
    width = int(counts.max())
    order = torch.arange(image_mask.shape[1], device=image_mask.device)
    key = torch.where(image_mask, order, order + image_mask.shape[1])  # image positions first, in order
    positions = key.sort(-1).indices[:, :width]
    mask = torch.arange(width, device=image_mask.device)[None] < counts[:, None]
    positions = torch.where(mask, positions, torch.zeros_like(positions))
    return positions, mask, gather_positions(prompt_embeds, positions)


class LaRePolicy(LatentPolicy):
    needs_attention = True

    def __init__(self, extractor, grids: list[tuple[int, int]], start_embed: torch.Tensor, *, latents: int,
                 window: int = 0, no_window: bool = False, adaptive: str = "none", threshold: float = 0.0):
        self.extractor = extractor  # Extractor, or None (--no-extractor: Z_t = H_t)
        self.grids = grids
        self.start_embed = start_embed  # [D] the <start> token's input embedding
        self.n_z, self.window_option, self.no_window = latents, window, no_window
        self.adaptive, self.threshold = adaptive, threshold
        self.windows = [window_size(window, g) for g in grids]

    def start(self, prompt) -> None:
        self.prompt_len = prompt.inputs_embeds.shape[1]
        self.positions, self.visual_mask, self.visual = visual_tokens(prompt.inputs_embeds, prompt.image_mask)
        for b, (h, w) in enumerate(self.grids):
            if int(self.visual_mask[b].sum()) != h * w:
                raise ValueError(f"sample {b}: {int(self.visual_mask[b].sum())} visual tokens for a {h}x{w} grid")
        batch = prompt.inputs_embeds.shape[0]
        self.active = torch.ones(batch, dtype=torch.bool, device=self.visual.device)
        self.previous = None

    def finished(self) -> bool:
        return not bool(self.active.any())

    def saliency(self, attention: torch.Tensor, b: int) -> torch.Tensor:
        """Sample ``b``'s attention over its visual tokens as an [H, W] map."""
        h, w = self.grids[b]
        row = attention[b, :self.prompt_len].gather(0, self.positions[b, :h * w])
        return row.reshape(h, w)

    def refocus(self, attention: torch.Tensor):
        """(rows [B], cols [B], V_loc [B, m, D], its mask [B, m]) of the chosen windows."""
        batch = attention.shape[0]
        rows, cols, cells = [], [], []
        for b in range(batch):  # grids (and so windows) may differ between samples
            chosen = sliding_window(self.saliency(attention, b)[None], self.windows[b])
            rows.append(chosen.row[0])
            cols.append(chosen.col[0])
            cells.append(chosen.index[0])
        rows, cols = torch.stack(rows), torch.stack(cols)
        width = max(len(c) for c in cells)
        index = torch.zeros(batch, width, dtype=torch.long, device=self.visual.device)
        mask = torch.zeros(batch, width, dtype=torch.bool, device=self.visual.device)
        for b, c in enumerate(cells):
            index[b, :len(c)] = c.to(index.device)
            mask[b, :len(c)] = True
        return rows, cols, gather_positions(self.visual, index), mask

    def step(self, index: int, query: Query) -> Chunk:
        hidden = query.states[:, -self.n_z:]  # [B, n_z, D] the latent query positions
        rows, cols, local, local_mask = self.refocus(query.attention)
        visual, visual_mask = (self.visual, self.visual_mask) if self.no_window else (local, local_mask)
        latents = hidden if self.extractor is None else self.extractor(hidden, visual, visual_mask)
        active = self.active.clone()
        if self.adaptive != "none" and self.previous is not None:
            converged = latent_distance(latents, self.previous, self.adaptive) < self.threshold
            self.active = self.active & ~converged  # this step's Z_t is appended; no step after it
        self.previous = latents.detach()
        embeds = latents
        if index == 0:
            start = self.start_embed.to(latents.dtype)[None, None].expand(latents.shape[0], 1, -1)
            embeds = torch.cat([start, latents], dim=1)
        mask = active[:, None].expand(-1, embeds.shape[1]).long()
        keep = torch.full_like(rows, -1)
        return Chunk(embeds=embeds, mask=mask, record={
            "latents": latents, "local": local.detach(), "local_mask": local_mask,
            "rows": torch.where(active, rows, keep), "cols": torch.where(active, cols, keep), "active": active})

    def sample_info(self, trace: LatentTrace, i: int) -> dict:
        steps = [s for s, active in enumerate(trace.field("active")) if bool(active[i])]
        return {"iterations": len(steps), "window": self.windows[i],
                "windows": [[int(trace.rows[s][i]), int(trace.cols[s][i])] for s in steps]}
