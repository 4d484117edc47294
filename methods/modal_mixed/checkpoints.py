"""Modal-mixed checkpoints (``harness train --method modal-mixed --out DIR``).

``adapter.safetensors`` LoRA on the LLM, ``new_embeddings.safetensors`` the control tokens' input and
output rows (trained: the model must learn to emit ``<|sketch|>``), ``sft_adapter.safetensors`` (an RL checkpoint) the SFT adapter RL started from, merged before
``adapter``; ``head.safetensors`` the sketch head
with the targets' standardisation statistics, ``config.json`` the shared options, the LoRA settings,
the base model's signature and the vocabulary size.
"""
from __future__ import annotations




def check_checkpoint(path: str) -> dict:
    """The folder's config, or a one-line error (before any model loads)."""
    from harness.latent.checkpoint import recipe_config

    return recipe_config(path, "modal-mixed", "modal-mixed's")


def checkpoint_fingerprint(path: str) -> str:
    from harness.latent.checkpoint import folder_fingerprint

    return folder_fingerprint(path)


def head_tensors(head, standardizer) -> dict:
    """``head.safetensors``: the head's and the standardiser's state under one file, by prefix."""
    return {**{f"head.{k}": v.detach() for k, v in head.state_dict().items()},
            **{f"standardizer.{k}": v.detach() for k, v in standardizer.state_dict().items()}}


def load_head(path: str, head, standardizer) -> None:
    from harness.latent.checkpoint import load_tensors

    state = load_tensors(path, "head")
    for prefix, module in (("head.", head), ("standardizer.", standardizer)):
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def load_trained(backbone, path: str, head, standardizer, *, allow_base_mismatch: bool = False) -> list[int]:
    """Control-token rows, then the LoRA adapter merged in, then the head; returns the control tokens' ids."""
    from harness.latent.adapters import LoraSettings, add_tokens, merge_adapter
    from harness.latent.checkpoint import check_base, load_tensors

    config = check_checkpoint(path)
    check_base(backbone, config, path, allow_base_mismatch)
    try:
        ids = add_tokens(backbone, config["new_tokens"], rows=load_tensors(path, "new_embeddings"),
                         vocab_size=config.get("vocab_size"))
        if config.get("sft_lora"):  # an RL checkpoint: its SFT adapter first, then RL's on top
            merge_adapter(backbone, LoraSettings.from_dict(config["sft_lora"]), load_tensors(path, "sft_adapter"))
        merge_adapter(backbone, LoraSettings.from_dict(config["lora"]), load_tensors(path, "adapter"))
        if head is not None:
            load_head(path, head, standardizer)
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"modal-mixed checkpoint {path} does not fit {backbone.model_id} or this head: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return ids
