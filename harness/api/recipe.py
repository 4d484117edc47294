"""The training interface: :class:`TrainConfig` (the loop's settings, as data), :class:`Schedule`,
:class:`Recipe`, and the ``TRAINERS`` registry (decorator + entry-point group ``harness.trainers``).

A recipe is everything method-specific about training: the model (adapters, new tokens), which
parameters train at which learning rate and which are frozen at each stage, the stage/epoch
schedule, what a batch is, the named losses (its module's forward returns them) and what a checkpoint
holds. :mod:`harness.train.loop` is everything else (devices, precision, accumulation, optimizer,
learning-rate schedule, checkpoints, resume, progress). Stdlib only: ``harness train --help`` imports it.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api.registry import Registry

if TYPE_CHECKING:  # for readers and type checkers only: api imports nothing above it at run time
    from torch import nn


@dataclass
class TrainConfig:
    """What is not method-specific about a training run; the recipe's own options are in ``options``."""

    method: str
    bench: str
    model: str
    data: str | None  # None: the reader's default (easyvqa: the installed package)
    out: str
    split: str = "train"
    epochs: int | None = None  # None: the total of the recipe's schedule
    max_steps: int | None = None  # optimizer steps; stops early (and saves) when reached
    batch_size: int = 4  # per device
    grad_accum: int = 1
    lr: float = 4e-5  # parameter groups without their own "lr" train at this rate
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # any transformers.get_scheduler name: constant, linear, cosine, ...
    max_grad_norm: float = 1.0
    seed: int = 0
    limit: int | None = None  # first N training examples
    lora_r: int = 64
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    mixed_precision: str = "auto"  # auto: bf16 on GPU, none on CPU
    cpu: bool = False  # force the CPU even when a GPU is present
    options: dict = field(default_factory=dict)  # the recipe's own options (`--name VALUE` flags)

    def check(self) -> None:
        """Bad numbers fail in one line before anything loads (0 steps must not mean "no limit")."""
        for name, value, least in (("--max-steps", self.max_steps, 1), ("--epochs", self.epochs, 1),
                                   ("--limit", self.limit, 1), ("--batch-size", self.batch_size, 1),
                                   ("--grad-accum", self.grad_accum, 1), ("--lora-r", self.lora_r, 1),
                                   ("--warmup-steps", self.warmup_steps, 0)):
            if value is not None and value < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"--out {self.out} is an existing file; pass a new or empty folder (or the folder of "
                             "a checkpoint to resume)")

    def identity(self) -> dict:
        """What must match to resume into an existing --out (everything but where and how long)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("out", "max_steps")}


@dataclass(frozen=True)
class Schedule:
    """Epochs per curriculum stage, in order. Epochs past the last stage keep counting stages of the
    last stage's length (a recipe decides what a stage beyond its last means)."""

    stage_epochs: tuple[int, ...] = (1,)

    def __post_init__(self):
        if not self.stage_epochs or any(n < 1 for n in self.stage_epochs):
            raise ValueError(f"every stage needs at least one epoch, got {list(self.stage_epochs)}")

    @property
    def total(self) -> int:
        return sum(self.stage_epochs)

    def stage_of(self, epoch: int) -> int:
        start = 0
        for stage, n in enumerate(self.stage_epochs):
            if epoch < start + n:
                return stage
            start += n
        return len(self.stage_epochs) + (epoch - start) // self.stage_epochs[-1]


class Recipe(ABC):
    name: ClassVar[str]
    benches: ClassVar[tuple[str, ...]] = ()  # the training data readers it accepts (harness.data.readers)
    # The recipe's own defaults for TrainConfig fields (a method's published hyper-parameters); a value
    # given on the command line wins, then these, then TrainConfig's.
    train_defaults: ClassVar[dict[str, Any]] = {}

    @dataclasses.dataclass
    class Options:  # method-specific hyper-parameters, given to `harness train` as --name VALUE
        pass

    def __init__(self, config: TrainConfig):
        self.config = config
        known = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(config.options) - known)
        if unknown:
            raise ValueError(f"trainer {self.name!r} has no option {', '.join(unknown)}; "
                             f"its options are: {', '.join(sorted(known))}")
        self.options = self.Options(**config.options)

    def backbone_options(self) -> dict:
        """Options ``load_backbone`` needs (e.g. ``{"rope": "1d"}``)."""
        return {}

    def schedule(self) -> Schedule:
        """The stages and their epochs; ``--epochs`` (when given) overrides the total."""
        return Schedule()

    @abstractmethod
    def setup(self, backbone) -> "nn.Module":
        """Make the backbone trainable (adapters, new tokens, frozen parts) and return the module whose
        ``forward(**batch)`` returns a dict of named losses (their sum is optimised)."""

    def param_groups(self, module: "nn.Module") -> list[dict]:
        """Optimizer parameter groups (``{"params": [...], "lr": ...}``; without ``"lr"``: ``--lr``).
        They hold every parameter that trains at any stage. Default: one group of the trainable ones."""
        return [{"params": [p for p in module.parameters() if p.requires_grad]}]

    def frozen(self, stage: int) -> tuple[str, ...]:
        """Names (or name prefixes, within ``module.named_parameters()``) of the grouped parameters
        that do not train at ``stage``. Default: none."""
        return ()

    @abstractmethod
    def epoch_items(self, examples: list, stage: int) -> list:
        """The training items of an epoch of ``stage`` (a curriculum changes them by stage)."""

    @abstractmethod
    def collate(self, items: list) -> dict[str, Any]:
        """A batch: keyword arguments for the module's forward."""

    @abstractmethod
    def checkpoint_tensors(self, module: "nn.Module") -> dict[str, dict]:
        """{file stem: state dict} of what a checkpoint holds (an adapter, new embeddings)."""

    @abstractmethod
    def restore(self, module: "nn.Module", folder) -> None:
        """Load a checkpoint's tensors (what :meth:`checkpoint_tensors` saved) back into ``module`` (resume)."""

    def checkpoint_config(self) -> dict:
        """Extra facts stored in the checkpoint's config json (e.g. the new tokens)."""
        return {}

    def upgrade_identity(self, saved: dict) -> dict:
        """A saved ``config.identity()`` written by an older version, in today's names (resume)."""
        return saved


TRAINERS: Registry[type[Recipe]] = Registry("trainer", "harness.trainers")
register_trainer = TRAINERS.register
