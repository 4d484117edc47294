"""The SFT forward: ``[image; question] target`` where the target interleaves text, control tokens and
sketch slots, ``text <|sketch|> e_1 .. e_Ns <|/sketch|> text ... The answer is X. <eos>``.

The true sketch vectors (the VLM's own pooled vision output of the intermediate image) are fed as the
slots' input embeddings (teacher forcing). Losses, as named by the training loop:

    lm     = next-token CE on text and control tokens (sketch slots carry no label)
    sketch = λ · head loss (diffusion: ε-MSE; --no-diffusion: x0-MSE) on every sketch token, the
             condition being the hidden state at the position before it (the gradient reaches the LLM)
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ModalMixedModel(nn.Module):
    def __init__(self, backbone, head, standardizer, lambda_sketch: float):
        super().__init__()
        self.model = backbone.model  # registered: LoRA and the control-token rows train
        self.backbone = backbone
        self.head = head  # None with --no-sketch
        self.standardizer = standardizer
        self.lambda_sketch = lambda_sketch

    def forward(self, inputs, target_ids, target_mask, labels, sketch_slots, sketch_values, return_states=False):
        backbone = self.backbone
        state, _ = backbone.prefill(inputs, grad=True)
        first_logits, first_hidden = state.logits, state.last_hidden
        embeds = backbone.embed_tokens(target_ids)
        if sketch_slots.any():
            embeds = torch.where(sketch_slots[..., None], sketch_values.to(embeds.dtype), embeds)
        result = backbone.append(state, embeds, mask=target_mask, grad=True)
        logits = torch.cat([first_logits[:, None], result.logits[:, :-1]], dim=1).float()
        losses = {"lm": F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)}
        # The hidden state at the position before each target position (the sketch token's condition).
        before = torch.cat([first_hidden[:, None], result.last_hidden[:, :-1]], dim=1)
        if self.head is not None and sketch_slots.any():
            x0 = self.standardizer(sketch_values[sketch_slots].float())
            losses["sketch"] = self.lambda_sketch * self.head.loss(x0, before[sketch_slots].float())
        return (losses, before) if return_states else losses
