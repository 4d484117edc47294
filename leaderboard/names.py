"""How the papers' names map onto ours, written out so a reader can check every match.

A reported number sits beside a measured one only when all three match:

* **method**: our registry name ↔ the paper's display names (``METHOD_NAMES``). A paper name that
  is not listed (e.g. "CCoT", "Finetuned CoT", an ablation) matches nothing and is shown on its own row.
* **benchmark**: our registry name ↔ the paper's name (``BENCHMARK_NAMES``), case-insensitive.
* **backbone**: the last path component of our run's model id (``Qwen/Qwen2-VL-7B-Instruct`` →
  ``Qwen2-VL-7B-Instruct``, a local folder → its name), compared case-insensitively with the paper's
  backbone. ``BACKBONE_ALIASES`` may map a paper's shorthand to a checkpoint name, but only where the
  paper names the checkpoint; it is empty because the papers here do not (the L2V-CoT paper's
  "QwenVL-7B" or "LLaVA-8B" could be several checkpoints, so they are never guessed).

Note on "Standard CoT" and "MM-CoT" in LaRe's Table 1: those rows are LLaVA-1.5-style models built on
the named Qwen2.5 LLM (the source's note says so); a run matches them only if its model folder carries
that exact name.
"""
from __future__ import annotations

# registry name → display names used by the papers (any of them matches)
METHOD_NAMES: dict[str, tuple[str, ...]] = {
    "direct": ("Non-CoT", "Direct"),
    "cot": ("Standard CoT", "CoT"),
    "mm-cot": ("MM-CoT",),
    "ivt-lr": ("IVT-LR",),
    "l2v-cot": ("L2V-CoT",),
    "lare": ("LaRe",),
    "modal-mixed-cot": ("Modal-mixed CoT",),
}

# registry name → the papers' benchmark name
BENCHMARK_NAMES: dict[str, str] = {
    "m3cot": "M3CoT",
    "mmstar": "MMStar",
    "mmbench": "MMBench",
    "mmvp": "MMVP",
    "pope": "POPE",
    "scienceqa": "ScienceQA",
    "mathvista": "MathVista",
    "mathverse": "MathVerse",
}

# paper backbone (lower case) → checkpoint name (lower case); only where the paper names the checkpoint
BACKBONE_ALIASES: dict[str, str] = {}

_METHOD_BY_PAPER = {name.lower(): ours for ours, names in METHOD_NAMES.items() for name in names}
_BENCH_BY_PAPER = {name.lower(): ours for ours, name in BENCHMARK_NAMES.items()}


def backbone_name(model: str | None) -> str:
    """The last path component of a model id or folder: ``org/Name`` and ``/x/y/Name/`` → ``Name``."""
    return (model or "").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def backbone_key(name: str | None) -> str:
    """What backbones are compared by: the last path component, lower case, aliases applied."""
    key = backbone_name(name).lower()
    return BACKBONE_ALIASES.get(key, key)


def method_from_paper(name: str) -> str | None:
    """Our registry name for a paper's method name, or None when we have no such method."""
    return _METHOD_BY_PAPER.get(name.strip().lower())


def benchmark_from_paper(name: str) -> str | None:
    return _BENCH_BY_PAPER.get(name.strip().lower())
