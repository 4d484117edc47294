"""The multi-step training forward shared by latent methods: latent loop, then the target tokens,
returning a dict of named losses (the training loop logs each and optimises their sum).

A batch holds the left-padded prompt ``inputs``, the number of latent steps ``n_latent`` of its
curriculum stage, and the right-padded ``target_ids`` / ``target_mask`` / ``labels`` of the text after
the latents. The forward runs the policy's loop through the KV cache with the graph kept, appends the
targets' embeddings, and computes next-token cross-entropy on the labelled targets only (prompt and
latent positions carry no labels). A method adds its own losses in :meth:`LatentForward.extra_losses`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from harness.latent.loop import LatentPolicy, LatentTrace, run_latent_loop


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The optimised objective: the sum of the named losses, in their order."""
    values = list(losses.values())
    if not values:
        raise ValueError("a training forward returned no losses")
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def right_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Target token rows as one right-padded [B, T] tensor and its mask (1 on real tokens): what the
    training forwards append after the prompt (or the latents)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask


class LatentForward(nn.Module, ABC):
    """``forward(**batch) -> {name: loss}`` around the backbone's model, so that ``accelerate`` (DDP,
    DeepSpeed) sees every forward go through one prepared module. Subclasses give :meth:`policy`."""

    def __init__(self, backbone):
        super().__init__()
        self.model = backbone.model  # registered: its parameters are what the optimizer trains
        self.backbone = backbone  # plain attribute: the interface the loop speaks to

    @abstractmethod
    def policy(self) -> LatentPolicy:
        """A fresh policy for one batch's loop."""

    def extra_losses(self, trace: LatentTrace, batch: dict) -> dict[str, torch.Tensor]:
        """Losses besides the target cross-entropy (e.g. alignment losses on the latents)."""
        return {}

    def forward(self, inputs, n_latent: int, target_ids: torch.Tensor, target_mask: torch.Tensor,
                labels: torch.Tensor, return_trace: bool = False, **extra):
        backbone = self.backbone
        loop = run_latent_loop(backbone, inputs, self.policy(), n_latent, grad=True)
        state = loop.state
        first_logits = state.logits  # at the last prompt / latent position: predicts the first target
        result = backbone.append(state, backbone.embed_tokens(target_ids), mask=target_mask, grad=True)
        logits = torch.cat([first_logits[:, None], result.logits[:, :-1]], dim=1).float()
        losses = {"ce": nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                    ignore_index=-100)}
        losses.update(self.extra_losses(loop.trace, {"inputs": inputs, "n_latent": n_latent, **extra}))
        return (losses, loop.trace) if return_trace else losses
