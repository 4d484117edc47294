"""Loading IVT-LR weights onto a backbone: our ``harness train`` folders and the published ``model.pth``.

Published checkpoints are full fp32 state dicts of the reference wrapper around a LoRA-wrapped
Qwen2-VL (transformers 4.51 module names), read with ``torch.load(..., weights_only=True)``:

    base_causallm.base_model.model.model.layers.{i}.self_attn.q_proj.base_layer.weight
    base_causallm.base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.default.weight   [r, in]
    base_causallm.base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.default.weight   [out, r]
    base_causallm.base_model.model.visual.blocks.{i}....
    base_causallm.base_model.model.lm_head.weight
    embedding.weight                      (the input embedding again: the wrapper's own reference)

Mapping: strip the wrapper and peft prefixes, drop ``base_layer``, merge each LoRA pair into its
weight (W + alpha/r * B @ A; r from A's shape, alpha from the training config: 16), rename to this
transformers' layout where it moved (``model.layers`` → ``model.language_model.layers``,
``visual`` → ``model.visual``), add the three latent tokens to the tokenizer and resize the
vocabulary to the checkpoint's, then ``load_state_dict(strict=True)``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from harness.api.hashing import digest_files
from harness.latent.checkpoint import check_base  # noqa: F401 (shared with LaRe; imported from here before)

from .model import LATENT_TOKENS
from .options import rope_from_legacy

log = logging.getLogger("harness")
WRAPPER_PREFIX = "base_causallm.base_model.model."
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.[^.]+\.weight$")


def checkpoint_fingerprint(path: str) -> str:
    """sha256 of a `harness train` folder's files, or of a published file's name, size, first and last MiB."""
    target = Path(path)
    if not target.exists():
        raise FileNotFoundError(f"ivt-lr checkpoint {path} does not exist; pass a `harness train --out` folder "
                                "or a published model.pth")
    files = sorted(p for p in target.iterdir() if p.suffix in (".json", ".safetensors")) if target.is_dir() else [target]
    # Our folders are small: every byte; a published model.pth may be 15 GB: sampled.
    digest = digest_files(files, sampled=not target.is_dir())
    return digest.hexdigest()[:16]


def check_checkpoint(path: str) -> dict | None:
    """Fail fast (before any model loads) on a path that is no IVT-LR checkpoint; a folder's config."""
    import json

    target = Path(path).expanduser()
    if not target.exists():
        raise FileNotFoundError(f"ivt-lr checkpoint {path} does not exist; pass a `harness train --out` folder "
                                "or a published model.pth")
    if target.is_file():
        return None
    config_file = target / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} is not a `harness train` checkpoint (no config.json); pass the folder "
                         "`harness train --method ivt-lr --out` wrote, or a published model.pth")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_file} is not valid JSON ({exc}); the checkpoint is damaged, train it again") \
            from None
    if not isinstance(config, dict) or config.get("recipe") is None:
        kind = (f"a {config['model_type']} model folder" if isinstance(config, dict) and config.get("model_type")
                else "not a `harness train` checkpoint")
        raise ValueError(f"{path} is {kind}, not an ivt-lr checkpoint; pass a model folder as --model and a "
                         "`harness train --method ivt-lr --out` folder as --checkpoint")
    if config["recipe"] != "ivt-lr":
        raise ValueError(f"{path} is a checkpoint of {config['recipe']!r}, not of ivt-lr; pass it to "
                         f"--method {config['recipe']}")
    return config


def load_into_backbone(backbone, path: str, *, rope: str, instruction: str, published_lora_alpha: float,
                       allow_base_mismatch: bool = False, image_size: int | None = None,
                       prompt: str = "harness") -> None:
    target = Path(path).expanduser()
    if target.is_dir():
        load_trained(backbone, target, rope=rope, instruction=instruction, prompt=prompt,
                     allow_base_mismatch=allow_base_mismatch, image_size=image_size)
    elif target.is_file():
        load_published(backbone, target, lora_alpha=published_lora_alpha)
    else:
        raise FileNotFoundError(f"ivt-lr checkpoint {path} does not exist")


def load_trained(backbone, folder: Path, *, rope: str, instruction: str, allow_base_mismatch: bool = False,
                 image_size: int | None = None, prompt: str = "harness") -> None:
    """A `harness train --method ivt-lr` folder: new token rows, then the LoRA adapter merged in."""
    from harness.latent.adapters import LoraSettings, add_tokens, merge_adapter
    from harness.latent.checkpoint import load_tensors

    config = check_checkpoint(str(folder))
    check_base(backbone, config, folder, allow_base_mismatch)
    # Checkpoints written before the rename record the mode as "positions" (1d | native).
    trained_rope = config["rope"] if "rope" in config else rope_from_legacy(config["positions"])
    # Checkpoints written before --prompt were trained on the harness prompt.
    checks = [("rope", rope, trained_rope), ("instruction", instruction, config["instruction"]),
              ("prompt", prompt, config.get("prompt", "harness"))]
    if image_size is not None:  # checkpoints written before --image-size fed images as they came
        checks.append(("image-size", image_size, config.get("image_size", 0)))
    for name, ours, theirs in checks:
        if ours != theirs:
            raise ValueError(f"checkpoint {folder} was trained with {name}={theirs!r} but this run uses {ours!r}; "
                             f"pass --{name} {theirs!r}")
    try:
        add_tokens(backbone, config["new_tokens"], rows=load_tensors(folder, "new_embeddings"),
                   vocab_size=config.get("vocab_size"))
        merge_adapter(backbone, LoraSettings.from_dict(config["lora"]), load_tensors(folder, "adapter"))
    except (RuntimeError, KeyError) as exc:  # shapes or names that do not fit this model
        raise ValueError(f"checkpoint {folder} does not fit {backbone.model_id}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; pass the base model "
                         "it was trained from") from None


def _rename_for(model_keys: set[str]):
    """Old (transformers <= 4.51) Qwen2-VL / LLaVA names → this model's names, when they moved."""
    moved = any(k.startswith("model.language_model.") for k in model_keys)

    def rename(name: str) -> str:
        if not moved:
            return name
        if name.startswith("visual."):
            return "model." + name
        if name.startswith("model.") and not name.startswith(("model.language_model.", "model.visual.")):
            return "model.language_model." + name[len("model."):]
        return name

    return rename


def map_published_state_dict(state: dict[str, torch.Tensor], model_keys: set[str], lora_alpha: float) -> dict:
    """The published wrapper's state dict → this model's ``state_dict`` names, LoRA merged (fp32 math)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    rename = _rename_for(model_keys)
    weights: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "embedding.weight":
            continue  # the same tensor as the input embedding, held twice by the wrapper
        if not key.startswith(WRAPPER_PREFIX):
            raise ValueError(f"unexpected key {key!r} in the published checkpoint (expected {WRAPPER_PREFIX}...)")
        name = key[len(WRAPPER_PREFIX):]
        match = LORA_KEY.match(name)
        if match:
            lora.setdefault(match["module"], {})[match["which"]] = value
            continue
        weights[rename(name.replace(".base_layer.", "."))] = value
    for module, pair in lora.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"LoRA pair of {module} is incomplete in the published checkpoint")
        name = rename(module) + ".weight"
        base = weights[name]
        rank = pair["A"].shape[0]
        weights[name] = (base.float() + (lora_alpha / rank) * (pair["B"].float() @ pair["A"].float())).to(base.dtype)
    if "embedding.weight" in state:
        embed = [k for k in weights if k.endswith("embed_tokens.weight")]
        if embed and not torch.equal(weights[embed[0]], state["embedding.weight"]):
            raise ValueError("published checkpoint: embedding.weight differs from the model's input embedding")
    return weights


def load_published(backbone, path: Path, *, lora_alpha: float) -> None:
    """A published IVT-LR ``model.pth`` (full fp32 state dict), LoRA merged, onto ``backbone``."""
    from harness.latent.adapters import add_tokens

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a non-checkpoint or an unsafe pickle
        raise ValueError(f"cannot read {path} as a state dict with weights_only=True: {str(exc).splitlines()[0]}") \
            from None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} does not hold a state dict")
    model = backbone.model
    embed_key = next((k for k in state if k.endswith("embed_tokens.weight")), None)
    if embed_key is None:
        raise ValueError(f"{path} has no embed_tokens weight; is it an IVT-LR model.pth?")
    add_tokens(backbone, LATENT_TOKENS, vocab_size=state[embed_key].shape[0])
    mapped = map_published_state_dict(state, set(model.state_dict()), lora_alpha)
    try:
        result = model.load_state_dict(mapped, strict=False)
    except RuntimeError as exc:  # size mismatches: a checkpoint of another width
        raise ValueError(f"published checkpoint {path} does not fit {backbone.model_id}: "
                         f"{' '.join(str(exc).split())[:300]}; pass the base model it was trained from") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"published checkpoint does not fit {backbone.model_id}: {len(result.missing_keys)} missing "
                         f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected "
                         f"(e.g. {result.unexpected_keys[:2]}); pass the base model it was trained from")
    backbone.lm_head = model.get_output_embeddings()
    model.eval()
