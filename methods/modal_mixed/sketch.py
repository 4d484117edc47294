"""Sketch targets: the VLM's own vision output for an intermediate image, as the LLM sees it.

The image goes through the backbone's own processor and vision tower + projector (merger); the
embeddings at its image-token positions are laid out on the visual grid (row-major), average-pooled to
``rows × cols = N_s`` cells (``rows`` the largest divisor of N_s not above its square root: 16 → 4×4)
and, for the head, standardised per dimension with statistics computed once on the training targets
and stored in the checkpoint. Fed back as input embeddings, a sketch token is the *unstandardised*
vector: what the LLM read at that place of the image.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def pool_shape(n: int) -> tuple[int, int]:
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


@torch.no_grad()
def sketch_targets(backbone, images: list, n_tokens: int) -> torch.Tensor:
    """[B, N_s, D] pooled projector outputs of one image each (no text besides the chat template)."""
    inputs = backbone.build_inputs([[image] for image in images], [""] * len(images))
    state, _ = backbone.prefill(inputs)
    grids = backbone.image_grid(inputs)
    rows, cols = pool_shape(n_tokens)
    out = []
    for i, (h, w) in enumerate(grids):
        visual = state.inputs_embeds[i][state.image_mask[i]].float()  # [h*w, D] in the sequence's order
        grid = visual.reshape(h, w, -1).permute(2, 0, 1)[None]  # [1, D, h, w]
        out.append(F.adaptive_avg_pool2d(grid, (rows, cols))[0].flatten(1).T)  # [N_s, D], row-major cells
    return torch.stack(out)


class Standardizer(torch.nn.Module):
    """Per-dimension mean and std of the training targets (buffers: they travel with the head's file)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, targets: torch.Tensor) -> None:
        flat = targets.reshape(-1, targets.shape[-1]).float()
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean
