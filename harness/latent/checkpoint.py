"""Training checkpoints: our own files only, safetensors for tensors, json for everything else.

An output folder of ``harness train`` holds:

- ``config.json``: the :class:`~harness.api.recipe.TrainConfig` (as data) plus what the recipe adds
  (new tokens, LoRA settings, prompt); written last, so its presence means the files beside it are whole;
- ``<stem>.safetensors`` for each tensor group the recipe names (``adapter``, ``new_embeddings``);
- ``progress.json``: epoch / step counters of the last save;
- ``state/``: ``accelerate``'s optimizer, scheduler and RNG state for resuming (model weights
  excluded: the adapter above is the model); ``accelerate`` loads it with ``weights_only=True``.

A save is staged in ``.incoming/`` and moved into place file by file (``os.replace``), progress and
config last, so an interruption never leaves a config that points at half-written files.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

CONFIG = "config.json"
PROGRESS = "progress.json"
STATE = "state"
STAGING = ".incoming"
log = logging.getLogger("harness")


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def staging_dir(out: str | Path) -> Path:
    staging = Path(out) / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def commit(out: str | Path, tensors: dict[str, dict], config: dict, progress: dict) -> None:
    """Write ``tensors`` (``{stem: state dict}``) into the staging folder (where ``state/`` may already
    be), then move everything into ``out``: tensors and state first, progress and config last."""
    from safetensors.torch import save_file

    out = Path(out)
    staging = out / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    for stem, state in tensors.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(staging / f"{stem}.safetensors"))
    for stem in tensors:
        os.replace(staging / f"{stem}.safetensors", out / f"{stem}.safetensors")
    if (staging / STATE).is_dir():
        old = out / (STATE + ".old")
        if old.exists():
            shutil.rmtree(old)
        if (out / STATE).exists():
            os.replace(out / STATE, old)
        os.replace(staging / STATE, out / STATE)
        shutil.rmtree(old, ignore_errors=True)
    write_json_atomic(out / PROGRESS, progress)
    write_json_atomic(out / CONFIG, config)
    shutil.rmtree(staging, ignore_errors=True)


def load_tensors(folder: str | Path, stem: str) -> dict:
    from safetensors.torch import load_file

    path = Path(folder) / f"{stem}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {folder} lacks {path.name}; was it written by `harness train`?")
    return load_file(str(path))


def recipe_config(path: str, recipe: str, label: str) -> dict:
    """A ``harness train --method recipe`` folder's config, or a one-line error (before any model loads);
    ``label`` names the recipe in the message ("LaRe's")."""
    folder = Path(path).expanduser()
    config_file = folder / CONFIG
    if not folder.is_dir() or not config_file.is_file():
        raise FileNotFoundError(f"{recipe} checkpoint {path} is no `harness train --method {recipe} --out` folder "
                                "(no config.json)")
    config = json.loads(config_file.read_text())
    if config.get("recipe") != recipe:
        raise ValueError(f"{path} is a {config.get('recipe') or 'non-harness'} checkpoint, not {label}; "
                         f"train one with `harness train --method {recipe}`")
    return config


def folder_fingerprint(path: str) -> str:
    """sha256 (16 hex digits) of every byte of a trained folder's json and safetensors files."""
    from harness.api.hashing import digest_files

    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".json", ".safetensors"))
    return digest_files(files, sampled=False).hexdigest()[:16]


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a `harness train` checkpoint (no {CONFIG})")
    return json.loads(path.read_text())


def resume_point(out: str | Path, identity: dict, upgrade=None) -> dict | None:
    """None for a fresh start (``out`` missing or empty); the saved progress when ``out`` is a
    checkpoint of the same configuration; otherwise a one-line ``ValueError``. ``upgrade`` maps a
    saved identity written by an older version to today's names before they are compared."""
    out = Path(out)
    if not out.exists() or not any(p for p in out.iterdir() if p.name != STAGING):
        return None
    if not (out / CONFIG).is_file() or not (out / PROGRESS).is_file():
        raise ValueError(f"--out {out} is not empty and is not a `harness train` checkpoint; "
                         "pass an empty or new folder")
    saved = json.loads((out / CONFIG).read_text()).get("train", {})
    if upgrade is not None:
        saved = upgrade(saved)
    if saved != identity:
        changed = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        raise ValueError(f"--out {out} holds a checkpoint of another configuration (differs in: "
                         f"{', '.join(changed)}); pass a new folder, or the same options to resume")
    return json.loads((out / PROGRESS).read_text())


def check_base(backbone, config: dict, folder, allow_mismatch: bool) -> None:
    """Refuse a checkpoint trained on another base model: its adapter would load and mean nothing."""
    trained = config.get("base_model")
    if trained is None:  # checkpoints written before the base was recorded: its revision only
        trained = {"revision": config.get("model_revision"), "model": (config.get("train") or {}).get("model")}
    here = backbone.signature()
    differs = [k for k in ("model_type", "hidden_size", "layers") if k in trained and trained[k] != here[k]]
    content = [str(x) for x in (trained.get("revision"), here["revision"])]
    if all(r.startswith("sha256:") for r in content) and content[0] != content[1]:
        differs.append("weights")  # both local folders: their content hashes must agree
    elif not any(r.startswith("sha256:") for r in content) and (trained.get("model"), content[0]) != \
            (here["model"], content[1]):
        differs.append("hub id/revision")
    if not differs:
        if any(r.startswith("sha256:") for r in content) and not all(r.startswith("sha256:") for r in content):
            log.warning("checkpoint %s was trained on %s (%s); this model (%s) cannot be compared by content",
                        folder, trained.get("model"), content[0], here["model"])
        return
    shape = [k for k in differs if k in ("model_type", "hidden_size", "layers")]
    described = (f"checkpoint {folder} was trained on {trained.get('model')} (revision {content[0]}"
                 + "".join(f", {k}={trained[k]}" for k in shape) + f"), not on {here['model']} (revision "
                 f"{content[1]}" + "".join(f", {k}={here[k]}" for k in shape) + f"): {', '.join(differs)} differ")
    if shape:
        raise ValueError(f"{described}; pass --model {trained.get('model')} (its adapter cannot fit this model)")
    if not allow_mismatch:
        raise ValueError(f"{described}; pass --model {trained.get('model')}, or --allow-base-mismatch if you know "
                         "the two are the same model")
    log.warning("%s; loading it anyway (--allow-base-mismatch)", described)
