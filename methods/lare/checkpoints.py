"""LaRe checkpoints (``harness train --method lare --out DIR``): what they hold and how they load.

``model.safetensors`` the VLM's trained weights (projector + LLM + embeddings with the two new rows;
the vision encoder is never trained, so it stays the base model's), ``extractor`` / ``pool`` /
``reconstructor.safetensors`` LaRe's modules (absent when an ablation left them out), ``config.json``
their architecture, the loop options, the base model's signature and the vocabulary size.
"""
from __future__ import annotations

from pathlib import Path


from .options import LATENT_TOKENS

ARCHITECTURE = ("latents_per_step", "window", "no_extractor", "no_window", "instruction")


def check_checkpoint(path: str) -> dict:
    """The folder's config, or a one-line error (before any model loads)."""
    from harness.latent.checkpoint import recipe_config

    return recipe_config(path, "lare", "LaRe's")


def checkpoint_fingerprint(path: str) -> str:
    from harness.latent.checkpoint import folder_fingerprint

    return folder_fingerprint(path)


def trained_tensors(backbone, module) -> dict[str, dict]:
    vision = {id(p) for p in backbone.vision_encoder_parameters()}
    tensors = {"model": {name: p.detach() for name, p in backbone.model.named_parameters() if id(p) not in vision}}
    for name in ("extractor", "pool", "reconstructor"):
        part = getattr(module, name, None)
        if part is not None:
            tensors[name] = {k: v.detach() for k, v in part.state_dict().items()}
    return tensors


def load_trained(backbone, path: str, *, extractor=None, pool=None, reconstructor=None, tokens_added: bool = False,
                 allow_base_mismatch: bool = False) -> list[int]:
    """Load a checkpoint into ``backbone`` (adding the two tokens first unless ``tokens_added``) and into
    the given modules. Returns the new tokens' ids."""
    import torch

    from harness.latent.adapters import add_tokens
    from harness.latent.checkpoint import check_base, load_tensors

    config = check_checkpoint(path)
    check_base(backbone, config, path, allow_base_mismatch)  # the same rule as every trained checkpoint
    if tokens_added:
        ids = backbone.tokenizer.convert_tokens_to_ids(list(LATENT_TOKENS))
    else:
        ids = add_tokens(backbone, LATENT_TOKENS, vocab_size=config.get("vocab_size"))
    params = dict(backbone.model.named_parameters())
    vision = {id(p) for p in backbone.vision_encoder_parameters()}
    saved = load_tensors(path, "model")
    unknown = sorted(set(saved) - set(params))
    missing = sorted(n for n, p in params.items() if id(p) not in vision and n not in saved)
    if unknown or missing:
        raise ValueError(f"lare checkpoint {path} does not fit this model ({len(unknown)} unknown tensors, e.g. "
                         f"{unknown[:1]}; {len(missing)} missing, e.g. {missing[:1]})")
    with torch.no_grad():
        for name, value in saved.items():
            if params[name].shape != value.shape:
                raise ValueError(f"lare checkpoint {path}: {name} has shape {tuple(value.shape)}, this model's "
                                 f"{tuple(params[name].shape)}")
            params[name].copy_(value.to(params[name]))
    for name, part in (("extractor", extractor), ("pool", pool), ("reconstructor", reconstructor)):
        if part is None:
            continue
        if not (Path(path) / f"{name}.safetensors").is_file():
            if name == "extractor":
                raise ValueError(f"lare checkpoint {path} was trained with --no-extractor; run it with "
                                 "--no-extractor true")
            continue  # a module the previous stage did not train starts fresh
        try:
            part.load_state_dict(load_tensors(path, name))
        except RuntimeError as exc:
            raise ValueError(f"lare checkpoint {path}: its {name} has another shape than this run's "
                             f"({str(exc).splitlines()[0]}); use the checkpoint's architecture options") from None
    return ids
