"""Selection over attention: which positions (image patches) a latent step looks at.

- :func:`top_k_positions`: the k highest-scoring available positions per sample (IVT-LR's latent
  vision: top-k image patches by the query's attention row, never one chosen before);
- :func:`sliding_window`: the w×w window of a visual grid with the largest summed saliency
  (sum-pooling, stride 1, argmax; LaRe's local refocusing);
- :func:`mark_used`, :func:`gather_positions`: the bookkeeping around them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def top_k_positions(scores: torch.Tensor, available: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` available positions with the highest score, per sample, in ascending position.

    ``scores`` [B, T] and ``available`` [B, T] (True = may be chosen). Returns ``index`` [B, n] and
    ``valid`` [B, n] with n = the most any sample could take (<= k); a sample with fewer available
    positions gets invalid (padding, index 0) entries at the end.
    """
    n = min(k, scores.shape[1])
    masked = scores.detach().float().masked_fill(~available, float("-inf"))
    top = masked.topk(n, dim=-1).indices  # [B, n]
    valid = available.gather(1, top)
    # Ascending position for the chosen ones (image order for patches), padding last.
    key = torch.where(valid, top, torch.full_like(top, scores.shape[1]))
    key, order = key.sort(dim=-1)
    valid = valid.gather(1, order)
    width = int(valid.sum(-1).max()) if valid.numel() else 0
    index = torch.where(valid, key, torch.zeros_like(key))[:, :width]
    return index, valid[:, :width]


def mark_used(available: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``available`` with the valid entries of ``index`` switched off (a position is chosen once)."""
    used = torch.zeros_like(available).scatter_(1, index, valid)
    return available & ~used


def gather_positions(embeds: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``embeds`` [B, T, D] at ``index`` [B, n] → [B, n, D]."""
    return embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1]))


@dataclass
class Window:
    """The chosen w×w window of each sample's grid."""

    row: torch.Tensor  # [B] top row of the window
    col: torch.Tensor  # [B] left column
    index: torch.Tensor  # [B, w*w] flat (row-major) grid indices of the window's cells, row-major
    pooled: torch.Tensor  # [B, H-w+1, W-w+1] summed saliency of every window


def sliding_window(saliency: torch.Tensor, window: int) -> Window:
    """The ``window`` × ``window`` region of ``saliency`` [B, H, W] with the largest sum (stride 1).

    Ties go to the first window in row-major order (top-most, then left-most). Sums are taken in
    fp32 whatever the input dtype, so bf16 attention does not reorder near-equal windows.
    """
    if saliency.dim() != 3:
        raise ValueError(f"saliency must be [B, H, W], got shape {tuple(saliency.shape)}")
    batch, height, width = saliency.shape
    if not 1 <= window <= min(height, width):
        raise ValueError(f"window {window} does not fit a {height}x{width} grid")
    x = saliency.detach().float()[:, None]
    ones = torch.ones(1, 1, window, window, dtype=x.dtype, device=x.device)
    pooled = torch.nn.functional.conv2d(x, ones)[:, 0]  # [B, H-w+1, W-w+1]: sum pooling, stride 1
    best = pooled.flatten(1).argmax(-1)  # first maximum in row-major order
    row, col = best // pooled.shape[2], best % pooled.shape[2]
    offsets = torch.arange(window, device=x.device)
    cells = (row[:, None, None] + offsets[None, :, None]) * width + (col[:, None, None] + offsets[None, None, :])
    return Window(row=row, col=col, index=cells.reshape(batch, -1), pooled=pooled)
