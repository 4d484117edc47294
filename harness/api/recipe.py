"""The recipe interface and the ``TRAINERS`` registry (decorator + entry-point group ``harness.trainers``).

A recipe is everything method-specific about training; :mod:`harness.train.loop` is everything
else (devices, precision, accumulation, optimizer, schedule, checkpoints, resume, progress).
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api.registry import Registry

if TYPE_CHECKING:
    from torch import nn


class Recipe(ABC):
    name: ClassVar[str]
    benches: ClassVar[tuple[str, ...]] = ()  # the training data readers it accepts (harness.train.data)

    @dataclasses.dataclass
    class Options:  # method-specific hyper-parameters, given to `harness train` as --name VALUE
        pass

    def __init__(self, config):  # a harness.train.loop.TrainConfig
        self.config = config
        known = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(config.options) - known)
        if unknown:
            raise ValueError(f"trainer {self.name!r} has no option {', '.join(unknown)}; "
                             f"its options are: {', '.join(sorted(known))}")
        self.options = self.Options(**config.options)

    def backbone_options(self) -> dict:
        """Options ``load_backbone`` needs (e.g. ``{"positions": "1d"}``)."""
        return {}

    def default_epochs(self) -> int:
        return 1

    @abstractmethod
    def setup(self, backbone) -> "nn.Module":
        """Make the backbone trainable (adapters, new tokens, frozen parts) and return the module whose
        ``forward(**batch)`` returns the loss."""

    @abstractmethod
    def epoch_items(self, examples: list, epoch: int) -> list:
        """The training items of one epoch (a curriculum changes them by epoch)."""

    @abstractmethod
    def collate(self, items: list) -> dict[str, Any]:
        """A batch: keyword arguments for the module's forward."""

    @abstractmethod
    def checkpoint_tensors(self, module: "nn.Module") -> dict[str, dict]:
        """{file stem: state dict} of what a checkpoint holds (an adapter, new embeddings)."""

    @abstractmethod
    def restore(self, module: "nn.Module", folder) -> None:
        """Load a checkpoint's tensors (what :meth:`checkpoint_tensors` saved) back into ``module`` (resume)."""

    def progress_fields(self, epoch: int) -> dict:
        """Extra fields for the progress bar (e.g. the curriculum stage)."""
        return {}

    def checkpoint_config(self) -> dict:
        """Extra facts stored in the checkpoint's config json (e.g. the new tokens)."""
        return {}


TRAINERS: Registry[type[Recipe]] = Registry("trainer", "harness.trainers")
register_trainer = TRAINERS.register
