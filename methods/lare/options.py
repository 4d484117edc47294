"""The options LaRe inference (``harness run``) and training (``harness train``) share, declared once.

A checkpoint records the architecture and loop options; ``harness run --checkpoint`` takes them from
it and refuses a command line that contradicts them.
"""
from __future__ import annotations

import dataclasses

ADAPTIVE = ("none", "cos", "l1", "l2")
LATENT_TOKENS = ("<|start-latent|>", "<|end-latent|>")  # wrap the latent sequence (paper, inference phase)


@dataclasses.dataclass
class SharedOptions:
    iterations: int = 4  # T (paper: 4)
    latents_per_step: int = 4  # n_z: latent tokens per iteration (ours; the paper gives none)
    window: int = 0  # w of the w×w sliding window; 0: about a ninth of the grid (round(side / 3))
    no_extractor: bool = False  # ablation: Z_t = the LLM's hidden states at the query positions (Coconut)
    no_window: bool = False  # ablation: the Extractor cross-attends to every visual token, not the window's
    extractor_layers: int = 2  # paper: 2
    extractor_hidden: int = 0  # paper: 1536 (for 896/1536-wide LLMs); 0: the LLM's hidden size
    extractor_heads: int = 0  # paper: 12 (head width 128); 0: hidden // 128, at least 1
    instruction: str = ""  # follows the benchmark's question; inference must use the training prompt


def check_shared(o: SharedOptions) -> None:
    """One-line errors before any model loads."""
    for name in ("iterations", "latents_per_step", "extractor_layers"):
        if getattr(o, name) < 1:
            raise ValueError(f"lare: --{name.replace('_', '-')} must be at least 1, got {getattr(o, name)}")
    for name in ("window", "extractor_hidden", "extractor_heads"):
        if getattr(o, name) < 0:
            raise ValueError(f"lare: --{name.replace('_', '-')} must be >= 0 (0: the default), got {getattr(o, name)}")


def window_size(option: int, grid: tuple[int, int]) -> int:
    """The window's side on a ``grid``: the option, or round(min side / 3) (a ninth of a square grid)."""
    side = min(grid)
    w = option or max(1, round(side / 3))
    if w > side:
        raise ValueError(f"lare: --window {w} does not fit the {grid[0]}x{grid[1]} visual grid of this model")
    return w


def prompt_text(question: str, instruction: str) -> str:
    return f"{question}\n{instruction}" if instruction else question
