"""Loading a VLM checkpoint into the uniform :class:`Backbone` interface.

``load_backbone(model_id_or_path)`` reads the config, picks the family by ``model_type``, loads the
model and processor with ``from_pretrained`` (a hub id or a local folder, never
``trust_remote_code``), and places them on the chosen device and dtype: CUDA + bf16 when a GPU is
present, else CPU + fp32, unless set explicitly.

Owns: the ``Backbone`` interface (:mod:`.base`), the families (:mod:`.families`), the causal-LM text
side (:mod:`.text`), tiny random checkpoints (:mod:`.tiny`). May import ``harness.api`` only.
"""
from __future__ import annotations

import os
from pathlib import Path

from harness.api.hashing import digest_files

# Importable without torch: `harness list` shows these.
FAMILY_NAMES = {
    "qwen2-vl": "Qwen2-VL / Qwen2.5-VL (model_type qwen2_vl, qwen2_5_vl); 3-D M-RoPE",
    "llava": "LLaVA-1.5, LLaVA-NeXT and LLaVA-style CLIP + Qwen2 (model_type llava, llava_next)",
    "chameleon": "Chameleon (model_type chameleon); images as VQ code tokens of the text vocabulary, 1-D positions",
}


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message says why and what to pass instead."""


def resolve_device_dtype(device: str = "auto", dtype: str = "auto"):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(f"unknown device {device!r}; choose auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelLoadError(f"--device {device}: no CUDA GPU is visible here; use --device cpu (or auto)")
        if parsed.index is not None and parsed.index >= count:
            raise ModelLoadError(f"--device {device}: only {count} CUDA GPU(s) visible (cuda:0..cuda:{count - 1})")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"--device {device}: this torch has no usable mps device; use --device cpu (or auto)")
    elif parsed.type not in ("cpu", "mps"):
        raise ModelLoadError(f"--device {device}: the harness runs on cpu or cuda (or mps); choose one of those")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    try:
        torch_dtype = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                       "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of: auto, bfloat16, float16, float32") from None
    return device, torch_dtype


ZOO_PREFIX = "zoo:"


def zoo_root() -> Path:
    """Where zoo models live: ``$HARNESS_ZOO``, else ``results/zoo`` of this checkout (committed there)."""
    return Path(os.environ.get("HARNESS_ZOO") or Path(__file__).resolve().parents[2] / "results" / "zoo")


def local_path(model: str) -> str:
    """``zoo:NAME`` as its folder (which must be built); anything else unchanged."""
    if not model.startswith(ZOO_PREFIX):
        return model
    name = model[len(ZOO_PREFIX):]
    folder = zoo_root() / name
    if not name or "/" in name or name.startswith(".") or not (folder / "config.json").is_file():
        raise ModelLoadError(f"zoo model {name!r} is not in {zoo_root()}: `harness zoo list` shows the zoo, "
                             f"`harness zoo build {name or 'NAME'}` builds one")
    return str(folder)


def model_name(model: str) -> str:
    """A local folder by its absolute path (``tiny``, ``./tiny`` and ``/abs/tiny`` are one model, so one
    run); a zoo model as ``zoo:NAME`` (the same name on every machine; its content hash is its
    revision); a hub id as given."""
    if model.startswith(ZOO_PREFIX):
        local_path(model)  # must exist
        return model
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def model_fingerprint(model_id: str, revision: str | None = None) -> str:
    """A revision for hub ids; for local folders a content hash of the config and weight files.

    Weight files are hashed by name, size and their first and last MiB: cheap on 15 GB
    checkpoints, and it changes whenever the weights are rewritten.
    """
    path = Path(local_path(model_id))
    if not path.is_dir():
        return revision or "main"
    files = [f for f in sorted(path.iterdir())
             if f.suffix in {".json", ".safetensors", ".bin", ".jinja", ".model"} and f.is_file()]
    digest = digest_files(files, sampled=True)
    return "sha256:" + digest.hexdigest()[:16]


def _first_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def load_backbone(model_id: str, *, device: str = "auto", dtype: str = "auto", revision: str | None = None,
                  attn_implementation: str | None = None, **family_options):
    """Load a hub id or local path as a :class:`Backbone` of its family."""
    from transformers import AutoConfig, AutoProcessor

    from harness.backbones.families import FAMILY_CLASSES

    name, model_id = model_id, local_path(model_id)
    local = Path(model_id).exists()
    if not local and (model_id.startswith((".", "/", "~")) or os.sep in model_id.strip("/").replace("/", "", 1)):
        raise ModelLoadError(f"model path {model_id!r} does not exist; pass a local checkpoint folder or a hub id")
    try:
        config = AutoConfig.from_pretrained(model_id, revision=revision)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: {str(exc).splitlines()[0]} "
            "(pass a local checkpoint folder, or a hub id on a machine with hub access; "
            "`harness tiny-model --family qwen2-vl --out DIR` writes a tiny one)"
        ) from None
    by_type = {t: cls for cls in FAMILY_CLASSES for t in cls.model_types}
    family_cls = by_type.get(config.model_type)
    if family_cls is None:
        raise ModelLoadError(
            f"model {model_id!r} has model_type {config.model_type!r}, which no backbone family supports; "
            f"supported model types: {', '.join(sorted(by_type))}"
        )
    device, torch_dtype = resolve_device_dtype(device, dtype)
    kwargs = {"revision": revision, "dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = family_cls.model_class(config.model_type).from_pretrained(model_id, **kwargs).to(device)
        processor = AutoProcessor.from_pretrained(model_id, revision=revision)
    except (OSError, ValueError, RuntimeError, EnvironmentError) as exc:
        # Missing or truncated weight files, a tokenizer that does not parse, shapes that do not fit.
        raise ModelLoadError(f"cannot load the weights of {model_id!r}: {_first_line(exc)} (is a file missing "
                             "or cut short? copy the checkpoint folder again, or write a fresh one)") from None
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":  # safetensors' own type, raised for a damaged file
            raise
        raise ModelLoadError(f"cannot read the weights of {model_id!r}: {_first_line(exc)} (a damaged or "
                             "truncated .safetensors file; copy the checkpoint folder again)") from None
    # A zoo model keeps its zoo name (the same on every machine); its content hash is its revision.
    return family_cls(model, processor, model_id=name if name.startswith(ZOO_PREFIX) else model_id,
                      revision=model_fingerprint(model_id, revision), **family_options)


def __getattr__(name):  # the classes import torch: load them only when asked for
    if name in ("Backbone", "DecodeState", "ForwardResult", "Generation", "capture_layers"):
        from harness.backbones import base

        return getattr(base, name)
    raise AttributeError(name)
