"""The options modal-mixed inference (``harness run``) and training (``harness train``) share, declared once.

A checkpoint records them; ``harness run --checkpoint`` takes them from it and refuses a command line
that contradicts them.
"""
from __future__ import annotations

import dataclasses

CONTROL_TOKENS = ("<|sketch|>", "<|/sketch|>")  # open and close a sketch segment
HEADS = ("diffusion", "regression")
SCHEDULES = ("linear", "squaredcos_cap_v2")


@dataclasses.dataclass
class SharedOptions:
    sketch_tokens: int = 16  # N_s latent tokens per sketch (the pooled vision output of the intermediate image)
    no_diffusion: bool = False  # ablation: a regression head (MSE on x0) instead of the diffusion head
    no_sketch: bool = False  # ablation: text-only CoT trained on the same traces (the sketch segments dropped)
    head_width: int = 256  # the denoiser's residual MLP width
    head_depth: int = 3  # its residual blocks (MAR: 3)
    schedule: str = "linear"  # DDPM noise schedule (diffusers beta_schedule)
    train_steps: int = 1000  # diffusion timesteps in training
    instruction: str = ""  # follows the benchmark's question; inference must use the training prompt


ARCHITECTURE = ("sketch_tokens", "no_diffusion", "no_sketch", "head_width", "head_depth", "schedule", "train_steps",
                "instruction")


def check_shared(o: SharedOptions) -> None:
    """One-line errors before any model loads."""
    for name in ("sketch_tokens", "head_width", "head_depth", "train_steps"):
        if getattr(o, name) < 1:
            raise ValueError(f"modal-mixed: --{name.replace('_', '-')} must be at least 1, got {getattr(o, name)}")
    if o.schedule not in SCHEDULES:
        raise ValueError(f"modal-mixed: --schedule must be one of: {', '.join(SCHEDULES)}; got {o.schedule!r}")
    if o.no_sketch and o.no_diffusion:
        raise ValueError("modal-mixed: --no-sketch has no sketch head, so --no-diffusion means nothing with it")


def head_kind(o: SharedOptions) -> str:
    return "regression" if o.no_diffusion else "diffusion"


def prompt_text(question: str, instruction: str) -> str:
    return f"{question}\n{instruction}" if instruction else question
