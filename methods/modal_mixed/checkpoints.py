"""Modal-mixed checkpoints (``harness train --method modal-mixed --out DIR``).

``adapter.safetensors`` LoRA on the LLM, ``new_embeddings.safetensors`` the control tokens' input and
output rows (trained: the model must learn to emit ``<|sketch|>``), ``sft_adapter.safetensors`` (an RL checkpoint) the SFT adapter RL started from, merged before
``adapter``; ``head.safetensors`` the sketch head
with the targets' standardisation statistics, ``config.json`` the shared options, the LoRA settings,
the base model's signature and the vocabulary size.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.api.hashing import digest_files


def check_checkpoint(path: str) -> dict:
    """The folder's config, or a one-line error (before any model loads)."""
    folder = Path(path).expanduser()
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file():
        raise FileNotFoundError(f"modal-mixed checkpoint {path} is no `harness train --method modal-mixed --out` "
                                "folder (no config.json)")
    config = json.loads(config_file.read_text())
    if config.get("recipe") != "modal-mixed":
        raise ValueError(f"{path} is a {config.get('recipe') or 'non-harness'} checkpoint, not modal-mixed's; "
                         "train one with `harness train --method modal-mixed`")
    return config


def checkpoint_fingerprint(path: str) -> str:
    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".json", ".safetensors"))
    return digest_files(files, sampled=False).hexdigest()[:16]


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
            state = load_tensors(path, "head")
            head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})
            standardizer.load_state_dict({k[len("standardizer."):]: v for k, v in state.items()
                                          if k.startswith("standardizer.")})
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"modal-mixed checkpoint {path} does not fit {backbone.model_id} or this head: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return ids
