"""The model zoo: tiny VLMs trained from scratch here, on real images, that answer easy-VQA well.

Owns the zoo: the recipes (:mod:`.recipes`, configs as data), the training loop (:mod:`.build`, one
file) and ``harness zoo list|build``. Built checkpoints are committed under ``results/zoo/NAME``
(``--model zoo:NAME`` loads one). May import ``harness.api``, ``harness.backbones`` and
``harness.data`` only; the prompts come from the registered methods through ``harness.api.METHODS``.
"""
from __future__ import annotations

from harness.zoo.recipes import RECIPES, Recipe

ZOO: dict[str, Recipe] = {recipe.name: recipe for recipe in RECIPES}


def names() -> list[str]:
    return sorted(ZOO)


def get(name: str) -> Recipe:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; choose one of: {', '.join(names())}") from None
