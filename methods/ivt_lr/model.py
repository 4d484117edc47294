"""IVT-LR's vocabulary additions and its training forward (the latent layer's multi-step forward
with the IVT-LR policy; the loop itself is :mod:`.policy`)."""
from __future__ import annotations

from harness.latent.train import LatentForward

from .policy import IVTLRPolicy

LATENT_TOKENS = ("<|start-latent|>", "<|end-latent|>", "<|latent|>")  # the published vocabulary additions


class IVTLRModel(LatentForward):
    """``forward(**batch) -> {"ce": loss}``: the IVT-LR loop over ``n_latent`` steps, then next-token
    cross-entropy on the targets (remaining rationale steps + answer) only."""

    def __init__(self, backbone, *, top_k: int, grad_through_latents: bool = False, **ablations):
        super().__init__(backbone)
        self.top_k = top_k
        self.grad_through_latents = grad_through_latents
        self.ablations = ablations  # IVTLRPolicy's patch_choice / patch_reuse / latent_text

    def policy(self) -> IVTLRPolicy:
        return IVTLRPolicy(self.top_k, grad_through_latents=self.grad_through_latents, **self.ablations)
