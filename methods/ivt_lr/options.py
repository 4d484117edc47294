"""The options IVT-LR inference (``harness run``) and training (``harness train``) share, declared once.

A checkpoint records the ones that must agree between the two (``rope``, ``instruction``), and
``harness run`` refuses a checkpoint trained with other values.
"""
from __future__ import annotations

import dataclasses

ROPE_MODES = ("1d", "mrope")


@dataclasses.dataclass
class SharedOptions:
    latent_steps: int = 3  # K at inference = the rationale steps = the last curriculum stage's latent steps
    top_k_patches: int = 32  # patches per step (32 for Qwen2-VL, 64 for Chameleon in the paper)
    # "1d": what the published code feeds Qwen2-VL, and what its checkpoints were trained with;
    # "mrope": the model's own M-RoPE (2-D image positions) continued as text positions.
    rope: str = "1d"
    instruction: str = "Answer:"  # follows the benchmark's question; inference must use the training prompt


def check_shared(options: SharedOptions) -> None:
    """One-line errors before any model loads."""
    if options.rope not in ROPE_MODES:
        raise ValueError(f"ivt-lr: --rope must be one of: {', '.join(ROPE_MODES)}; got {options.rope!r}")
    if options.latent_steps < 0 or options.top_k_patches < 0:
        raise ValueError("ivt-lr: --latent-steps and --top-k-patches must be >= 0")


def rope_from_legacy(value: str) -> str:
    """A ``positions`` value written before the rename (``native`` = today's ``mrope``)."""
    return {"native": "mrope"}.get(value, value)


def prompt_text(question: str, instruction: str) -> str:
    """The prompt both inference and training feed: the benchmark's question, then the instruction."""
    return f"{question}\n{instruction}" if instruction else question
