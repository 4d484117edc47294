"""The Extractor (paper Sec. 3.1, Eqs. 3–5; App. B): the LLM's hidden states at the latent query
positions → the new latent tokens Z_t, refocused on the window's visual features V_loc.

Per layer l (L = 2): X = Linear(S); X = X + SelfAttn(X) (the latent state's own logic); X = X +
CrossAttn(X, V_loc) (refocusing: the latent state queries the local visual features); S = X. Then a GLU
and an FFN. Where the paper is silent (its equations did not survive extraction), ours:

- pre-norm (LayerNorm before each attention and before the GLU), the usual way to keep residual
  stacks stable;
- in/out projections between the LLM width and the Extractor's (paper: 1536 wide, 12 heads);
- Z_t = H_t + FFN(GLU(S)) with the FFN's last layer zero-initialised, so an untrained Extractor gives
  Coconut's latent (the hidden state itself) and training learns what the refocused region adds;
  ``--no-extractor`` is exactly that latent, without the learned part.
"""
from __future__ import annotations

import torch
from torch import nn


def default_heads(hidden: int, heads: int = 0) -> int:
    heads = heads or max(1, hidden // 128)  # the paper's 1536 / 12 = 128 per head
    if hidden % heads:
        raise ValueError(f"lare: --extractor-hidden {hidden} is not divisible by --extractor-heads {heads}")
    return heads


class ExtractorLayer(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)
        self.norm_self = nn.LayerNorm(hidden)
        self.self_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(hidden)
        self.cross_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)

    def forward(self, state: torch.Tensor, visual: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        x = self.linear(state)
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.norm_cross(x)
        return x + self.cross_attn(h, visual, visual, key_padding_mask=padding, need_weights=False)[0]


class Extractor(nn.Module):
    """``forward(hidden [B, n_z, D], visual [B, m, D], visual_mask [B, m] or None) -> Z [B, n_z, D]``."""

    def __init__(self, width: int, hidden: int = 0, layers: int = 2, heads: int = 0):
        super().__init__()
        hidden = hidden or width
        heads = default_heads(hidden, heads)
        self.config = {"width": width, "hidden": hidden, "layers": layers, "heads": heads}
        self.in_state = nn.Linear(width, hidden)
        self.in_visual = nn.Linear(width, hidden)
        self.layers = nn.ModuleList(ExtractorLayer(hidden, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.glu = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GLU(dim=-1))
        self.ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, width))
        nn.init.zeros_(self.ffn[-1].weight)
        nn.init.zeros_(self.ffn[-1].bias)

    def forward(self, hidden: torch.Tensor, visual: torch.Tensor, visual_mask: torch.Tensor | None = None) -> torch.Tensor:
        dtype = hidden.dtype
        param = self.in_state.weight.dtype
        state, visual = self.in_state(hidden.to(param)), self.in_visual(visual.to(param))
        padding = None if visual_mask is None or bool(visual_mask.all()) else ~visual_mask.bool()
        for layer in self.layers:
            state = layer(state, visual, padding)
        return (hidden.to(param) + self.ffn(self.glu(self.norm(state)))).to(dtype)


class HybridPool(nn.Module):
    """Mean-max pooling (App. B, probing: "the same hybrid pooling module employed during training"):
    Linear([mean over valid tokens; max over valid tokens]) → ``dim``. One module for latents, rationale
    hidden states and visual features, so all three land in one space."""

    def __init__(self, width: int, dim: int = 256):
        super().__init__()
        self.proj = nn.Linear(2 * width, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.to(self.proj.weight.dtype)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        mask = mask.bool()
        m = mask[..., None].to(x.dtype)
        mean = (x * m).sum(1) / m.sum(1).clamp(min=1)
        maxed = x.masked_fill(~mask[..., None], float("-inf")).amax(1)
        maxed = torch.where(torch.isfinite(maxed), maxed, torch.zeros_like(maxed))  # a sample with no token
        return self.proj(torch.cat([mean, maxed], dim=-1))
