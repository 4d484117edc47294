"""The options IVT-LR inference (``harness run``) and training (``harness train``) share, declared once.

A checkpoint records the ones that must agree between the two (``rope``, ``instruction``, ``prompt``,
``image_size``), and ``harness run`` refuses a checkpoint trained with other values.
"""
from __future__ import annotations

import dataclasses

ROPE_MODES = ("1d", "mrope")
PROMPTS = ("auto", "published", "harness")
DEFAULT_INSTRUCTION = "Answer:"
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
    instruction: str = DEFAULT_INSTRUCTION  # follows the benchmark's question (--prompt harness only)
    # "published": the reference code's own prompt (raw question and options, no context; the released
    # weights were trained on it); "harness": the benchmark's formatted question + --instruction;
    # "auto": published for a published .pth, what a `harness train` checkpoint records, else harness.
    prompt: str = "auto"
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
    if options.prompt not in PROMPTS:
        raise ValueError(f"ivt-lr: --prompt must be one of: {', '.join(PROMPTS)}; got {options.prompt!r}")
    if options.prompt == "published" and options.instruction != DEFAULT_INSTRUCTION:
        raise ValueError("ivt-lr: --instruction applies to --prompt harness only (the published prompt ends with "
                         "its own 'Answer:'); drop --instruction or pass --prompt harness")
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
    """The harness prompt both inference and training feed: the benchmark's question, then the instruction."""
    return f"{question}\n{instruction}" if instruction else question


def resolve_prompt(prompt: str, *, published_checkpoint: bool = False, trained: dict | None = None) -> str:
    """``auto`` made concrete (stored so in the run's config): ``published`` for a published ``.pth``,
    the prompt a `harness train` checkpoint's config records (``harness`` before the option existed),
    ``harness`` otherwise."""
    if prompt != "auto":
        return prompt
    if published_checkpoint:
        return "published"
    if trained is not None:
        return trained.get("prompt", "harness")
    return "harness"


def published_prompt(stem: str, choices: list[str], *, training: bool) -> str:
    """The reference code's user text (FYYDCC/IVT-LR, Qwen2-VL on M3CoT). Training
    (``qwen_vl/qwenvl_run.py``, ``process_example``) and inference (``qwen_vl/infer.py``, ``format_prompt``)
    differ: options ``(A).{c}`` vs ``A.{c}``, and training ends ``Answer:\n``, inference ``Answer:``.
    The braces are literal in both. Without options the block is left out (the reference's ScienceQA
    inference does so; its M3CoT questions always have options)."""
    lines = [f"[Question]:{{{stem.strip()}}}"]
    if choices:
        label = "({}).{{{}}}" if training else "{}.{{{}}}"
        lines += ["[Options]:"] + [label.format(chr(65 + i), c.strip()) for i, c in enumerate(choices)]
    text = "\n".join(lines + ["Answer:"])
    return text + "\n" if training else text


def build_prompt(options: SharedOptions, question: str, stem: str | None, choices: list[str], *,
                 training: bool) -> str:
    """The text IVT-LR feeds after the images, under ``options.prompt`` (already resolved)."""
    if options.prompt == "harness":
        return prompt_text(question, options.instruction)
    if options.prompt != "published":
        raise ValueError(f"ivt-lr: --prompt {options.prompt!r} was not resolved")  # a caller's bug
    if stem is None:
        raise ValueError("ivt-lr: --prompt published needs the sample's own question and options, and this caller "
                         "gives only a formatted prompt (e.g. the VLMEvalKit adapter); pass --prompt harness")
    return published_prompt(stem, choices, training=training)


def resize_images(images: list, side: int) -> list:
    """Each image as ``side`` x ``side`` (PIL's default filter, as the published code resizes); 0: as given."""
    return [image.resize((side, side)) if side and image.size != (side, side) else image for image in images]
