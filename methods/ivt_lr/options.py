"""The options IVT-LR inference (``harness run``) and training (``harness train``) share, declared once.

A checkpoint records the ones that must agree between the two (``rope``, ``instruction``), and
``harness run`` refuses a checkpoint trained with other values.
"""
from __future__ import annotations

import dataclasses

ROPE_MODES = ("1d", "mrope")
PATCH_CHOICES = ("attention", "random", "uniform")
# The ablations' options: left out of a run's stored config at these values, so runs stored before
# the ablations existed keep their key.
ABLATION_DEFAULTS = {"patch_choice": "attention", "patch_reuse": False, "latent_text": True}


@dataclasses.dataclass
class SharedOptions:
    latent_steps: int = 3  # K at inference = the rationale steps = the last curriculum stage's latent steps
    top_k_patches: int = 32  # patches per step (32 for Qwen2-VL, 64 for Chameleon in the paper)
    # "1d": what the published code feeds Qwen2-VL, and what its checkpoints were trained with;
    # "mrope": the model's own M-RoPE (2-D image positions) continued as text positions.
    rope: str = "1d"
    instruction: str = "Answer:"  # follows the benchmark's question; inference must use the training prompt
    # Every image resized to image_size x image_size, as the published code does (280: 100 Qwen2-VL
    # image tokens, of which 3 x 32 are picked); 0 keeps the images as they come.
    image_size: int = 280
    # Ablations (the paper's and ours): --top-k-patches 0 is latent text only; --latent-text false is
    # latent vision only; --patch-choice random|uniform replaces attention; --patch-reuse lets a step
    # pick a patch an earlier step picked.
    patch_choice: str = "attention"
    patch_reuse: bool = False
    latent_text: bool = True


def check_shared(options: SharedOptions) -> None:
    """One-line errors before any model loads."""
    if options.rope not in ROPE_MODES:
        raise ValueError(f"ivt-lr: --rope must be one of: {', '.join(ROPE_MODES)}; got {options.rope!r}")
    if options.latent_steps < 0 or options.top_k_patches < 0:
        raise ValueError("ivt-lr: --latent-steps and --top-k-patches must be >= 0")
    if options.image_size < 0:
        raise ValueError(f"ivt-lr: --image-size must be >= 0 (0: no resize), got {options.image_size}")
    if options.patch_choice not in PATCH_CHOICES:
        raise ValueError(f"ivt-lr: --patch-choice must be one of: {', '.join(PATCH_CHOICES)}; "
                         f"got {options.patch_choice!r}")
    if not options.latent_text and options.top_k_patches == 0 and options.latent_steps > 0:
        raise ValueError("ivt-lr: --latent-text false with --top-k-patches 0 appends nothing at a latent step; "
                         "keep one of the two")


def policy_options(options: SharedOptions) -> dict:
    """The policy's keyword arguments (inference and training build the same policy)."""
    return {"patch_choice": options.patch_choice, "patch_reuse": options.patch_reuse,
            "latent_text": options.latent_text}


def rope_from_legacy(value: str) -> str:
    """A ``positions`` value written before the rename (``native`` = today's ``mrope``)."""
    return {"native": "mrope"}.get(value, value)


def prompt_text(question: str, instruction: str) -> str:
    """The prompt both inference and training feed: the benchmark's question, then the instruction."""
    return f"{question}\n{instruction}" if instruction else question


def resize_images(images: list, side: int) -> list:
    """Each image as ``side`` x ``side`` (PIL's default filter, as the published code resizes); 0: as given."""
    return [image.resize((side, side)) if side and image.size != (side, side) else image for image in images]
