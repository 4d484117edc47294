"""Trainable additions to a backbone: new tokens, and LoRA on the language model only (``peft``).

Family-neutral: LoRA targets are found by walking ``backbone.language_model``, so a vision tower
whose layers share names with the language model's (CLIP's ``q_proj``, Qwen2.5-VL's ``gate_proj``)
stays frozen.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings:
    r: int = 64
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS

    def to_dict(self) -> dict:
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.targets)}

    @classmethod
    def from_config(cls, config) -> "LoraSettings":
        """From ``harness train``'s --lora-r/--lora-alpha/--lora-dropout/--lora-targets (a TrainConfig)."""
        return cls(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                   targets=tuple(t.strip() for t in config.lora_targets.split(",") if t.strip()))

    @classmethod
    def from_dict(cls, d: dict) -> "LoraSettings":
        return cls(r=int(d["r"]), alpha=float(d["alpha"]), dropout=float(d["dropout"]), targets=tuple(d["targets"]))


def lora_target_names(backbone, targets) -> list[str]:
    """Full names (within ``backbone.model``) of the language model's Linear layers named in ``targets``."""
    inside = {id(m) for m in backbone.language_model.modules()}
    names = [name for name, module in backbone.model.named_modules()
             if id(module) in inside and isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in set(targets)]
    if not names:
        raise ValueError(f"no Linear layer named {', '.join(targets)} in the language model; "
                         "pass --lora-targets with names of its projection layers")
    return names


def attach_lora(backbone, settings: LoraSettings):
    """Inject LoRA layers into ``backbone.model`` in place (everything else frozen); returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                        target_modules=lora_target_names(backbone, settings.targets))
    return get_peft_model(backbone.model, config)


def adapter_state(model) -> dict[str, torch.Tensor]:
    """The LoRA tensors of a model with an attached adapter, under the model's own parameter names."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if "lora_" in k}


def merge_adapter(backbone, settings: LoraSettings, state: dict[str, torch.Tensor]) -> None:
    """Attach LoRA, load a saved adapter (:func:`adapter_state` names) and merge it into the weights,
    so inference costs what the base model costs."""
    peft_model = attach_lora(backbone, settings)
    expected = set(adapter_state(backbone.model))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"adapter does not fit this model ({len(missing)} LoRA tensors missing, e.g. "
                         f"{missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]}); "
                         "was it trained on another model or with other --lora-* settings?")
    backbone.model.load_state_dict(state, strict=False)
    peft_model.merge_and_unload()  # swaps the LoRA layers of backbone.model for merged Linear layers
    backbone.model.eval()


def add_tokens(backbone, tokens, init_from: str | None = None, rows: dict[str, torch.Tensor] | None = None,
               vocab_size: int | None = None) -> list[int]:
    """Add ``tokens`` to the tokenizer and the embedding / output matrices.

    New rows start from ``init_from`` (the mean of the rows of the tokens it encodes to; one token for
    Coconut's and IVT-LR's "<<" on Qwen's tokenizer), or are set from saved ``rows``
    (``{"input": [n, D], "output": [n, D]}``). ``vocab_size`` resizes to an exact size (a published
    checkpoint's). Returns the new tokens' ids.
    """
    tokenizer, model = backbone.tokenizer, backbone.model
    tokenizer.add_special_tokens({"additional_special_tokens": list(tokens)}, replace_extra_special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    size = vocab_size or max(len(tokenizer), model.get_input_embeddings().weight.shape[0])
    if max(ids) >= size:
        raise ValueError(f"vocabulary of {size} rows has no room for new token ids {ids}")
    model.resize_token_embeddings(size, mean_resizing=False)
    backbone.lm_head = model.get_output_embeddings()  # resizing may replace the output layer
    embed_in, embed_out = model.get_input_embeddings().weight, backbone.lm_head.weight
    with torch.no_grad():
        if rows is not None:
            embed_in[ids] = rows["input"].to(embed_in)
            embed_out[ids] = rows["output"].to(embed_out)
        elif init_from is not None:
            source = tokenizer.encode(init_from, add_special_tokens=False)
            if not source:
                raise ValueError(f"--init-token {init_from!r} encodes to no token; pass a word of the vocabulary")
            embed_in[ids] = embed_in[source].mean(0)
            embed_out[ids] = embed_out[source].mean(0)
    return ids


def token_rows(backbone, ids: list[int]) -> dict[str, torch.Tensor]:
    """The input and output embedding rows of ``ids`` (what a checkpoint stores for new tokens)."""
    return {"input": backbone.model.get_input_embeddings().weight[ids].detach().contiguous().clone(),
            "output": backbone.lm_head.weight[ids].detach().contiguous().clone()}
