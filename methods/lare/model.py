"""LaRe's training forward: T refocusing iterations through the KV cache with the graph kept, then the
target text, and the semantic-augmentation losses (paper Eq. 9–10):

    L = L_LM + λ1·L_align + λ2·L_img + λ3·L_text

returned as named, already weighted losses ``{"lm", "align", "img", "text"}`` (the training loop logs
each and optimises their sum). A batch with ``n_latent = 0`` (stage I) is the plain LM loss on the
prompt → answer, no latents and no latent losses.

Sequences: ``prompt <start> Z_1 .. Z_T <end> target`` (``target_ids`` begins with <end>, unlabelled);
text reconstruction reads ``<start> Z_1 .. Z_T r_1 .. r_P`` (a separate forward: the latents alone must
carry the rationale's first P tokens); alignment pools Z (all iterations), the LLM's hidden states over
the rationale alone (no gradient: targets detached) and the windows' visual features (detached).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from harness.latent.loop import run_latent_loop
from harness.latent.train import LatentForward

from .losses import region_pixels, symmetric_infonce
from .policy import LaRePolicy


class LaReModel(LatentForward):
    def __init__(self, backbone, *, extractor, pool, reconstructor, image_tokenizer, start_id: int, loss: dict,
                 loop: dict):
        super().__init__(backbone)
        self.extractor = extractor  # nn.Module, or None (--no-extractor)
        self.pool = pool  # HybridPool, or None (--no-align)
        self.reconstructor = reconstructor  # Reconstructor, or None (--no-img-recon)
        self.image_tokenizer = image_tokenizer  # frozen, not a submodule: it is no part of a checkpoint
        self.start_id = start_id
        self.weights = loss  # lambda_align, lambda_img, lambda_text, tau, recon_size
        self.loop = loop  # latents, window, no_window

    def start_embed(self) -> torch.Tensor:
        return self.backbone.model.get_input_embeddings().weight[self.start_id]

    def policy(self, grids=None) -> LaRePolicy:
        return LaRePolicy(self.extractor, grids, self.start_embed(), latents=self.loop["latents"],
                          window=self.loop["window"], no_window=self.loop["no_window"])

    def forward(self, inputs, n_latent: int, target_ids, target_mask, labels, rationale_ids=None,
                rationale_mask=None, pixels=None, return_trace: bool = False):
        backbone = self.backbone
        grids, policy = None, None
        if n_latent:
            grids = backbone.image_grid(inputs)
            policy = self.policy(grids)
            loop = run_latent_loop(backbone, inputs, policy, n_latent, grad=True)
            state, trace = loop.state, loop.trace
        else:  # stage I: prompt → answer, the backbone as it is
            state, _ = backbone.prefill(inputs, grad=True)
            trace = None
        first_logits = state.logits
        result = backbone.append(state, backbone.embed_tokens(target_ids), mask=target_mask, grad=True)
        logits = torch.cat([first_logits[:, None], result.logits[:, :-1]], dim=1).float()
        losses = {"lm": F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)}
        if n_latent:
            losses.update(self.latent_losses(trace, policy, grids, rationale_ids, rationale_mask, pixels))
        return (losses, trace) if return_trace else losses

    def latent_losses(self, trace, policy, grids, rationale_ids, rationale_mask, pixels) -> dict:
        w = self.weights
        latents = torch.cat(trace.latents, dim=1)  # [B, T * n_z, D]
        losses = {}
        if self.pool is not None and w["lambda_align"]:
            losses["align"] = w["lambda_align"] * self.align_loss(trace, latents, rationale_ids, rationale_mask)
        if self.reconstructor is not None and w["lambda_img"]:
            losses["img"] = w["lambda_img"] * self.image_loss(trace, policy, grids, pixels)
        if w["lambda_text"]:
            losses["text"] = w["lambda_text"] * self.text_loss(latents, rationale_ids, rationale_mask)
        return losses

    def rationale_states(self, ids, mask) -> torch.Tensor:
        """The LLM's final-norm hidden states over the rationale alone [B, L, D], without gradient."""
        backbone = self.backbone
        start = torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
        with torch.no_grad():
            result = backbone.forward_embeds(backbone.embed_tokens(ids), mask, backbone.appended_positions(start, mask))
        return result.last_hidden.detach()

    def align_loss(self, trace, latents, rationale_ids, rationale_mask) -> torch.Tensor:
        z = self.pool(latents)
        text = self.pool(self.rationale_states(rationale_ids, rationale_mask), rationale_mask)
        visual = self.pool(torch.cat(trace.local, dim=1), torch.cat(trace.local_mask, dim=1))
        tau = self.weights["tau"]
        return symmetric_infonce(z, text, tau) + symmetric_infonce(z, visual, tau)

    def image_loss(self, trace, policy, grids, pixels) -> torch.Tensor:
        """Denoising score matching on every iteration's refocused region, conditioned on that Z_t."""
        size = self.weights["recon_size"]
        targets, conds = [], []
        for rows, cols, z in zip(trace.rows, trace.cols, trace.latents):
            crops = region_pixels(pixels, rows, cols, policy.windows, grids, size)
            targets.append(self.image_tokenizer.encode(crops))
            conds.append(z)
        return self.reconstructor.loss(torch.cat(targets), torch.cat(conds))

    def text_loss(self, latents, rationale_ids, rationale_mask) -> torch.Tensor:
        """CE of the rationale's first P tokens read after ``<start> Z_1 .. Z_T`` (P = the batch's
        ``rationale_ids`` width cut at ``prefix``)."""
        backbone = self.backbone
        prefix = self.weights["prefix"]
        ids, mask = rationale_ids[:, :prefix], rationale_mask[:, :prefix]
        batch, n = latents.shape[0], latents.shape[1] + 1
        start = self.start_embed().to(latents.dtype)[None, None].expand(batch, 1, -1)
        embeds = torch.cat([start, latents, backbone.embed_tokens(ids).to(latents.dtype)], dim=1)
        full_mask = torch.cat([mask.new_ones(batch, n), mask], dim=1)
        zero = torch.zeros(batch, dtype=torch.long, device=ids.device)
        result = backbone.forward_embeds(embeds, full_mask, backbone.appended_positions(zero, full_mask), grad=True)
        logits = result.logits[:, n - 1:-1].float()  # position n-1 (the last latent) predicts r_1
        labels = ids.masked_fill(mask == 0, -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def modules_of(model: nn.Module) -> dict[str, nn.Module]:
    """LaRe's own trained modules (the checkpoint's files besides the VLM's weights)."""
    return {name: getattr(model, name) for name in ("extractor", "pool", "reconstructor")
            if getattr(model, name, None) is not None}
