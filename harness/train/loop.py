"""The training loop, whole, in one file (nanoGPT / torchtune style).

``train(config)`` runs on one CPU, one GPU, or several GPUs under ``accelerate launch`` (DDP or
DeepSpeed, from the accelerate config): the same code. Per epoch the recipe gives the items (a
curriculum changes them by epoch); per batch the recipe's module returns the loss; ``accelerate``
handles devices, bf16 autocast on GPU, gradient accumulation and distributed reduction. A checkpoint
(safetensors adapter + new embeddings + config json, and accelerate's optimizer/scheduler/RNG state)
is saved at the end of every epoch and when ``max_steps`` is reached; running the same command again
resumes from it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.train import checkpoint as ckpt
from harness.api import TRAINERS

log = logging.getLogger("harness")


@dataclass
class TrainConfig:
    method: str
    bench: str
    model: str
    data: str
    out: str
    split: str = "train"
    epochs: int | None = None  # None: the recipe's default (IVT-LR: epochs_per_stage * (stages + 1))
    epochs_per_stage: int = 4
    max_steps: int | None = None  # optimizer steps; stops early (and saves) when reached
    batch_size: int = 4  # per device
    grad_accum: int = 1
    lr: float = 4e-5
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
    options: dict = field(default_factory=dict)  # the recipe's own options

    def check(self) -> None:
        """Bad numbers fail in one line before anything loads (0 steps must not mean "no limit")."""
        for name, value, least in (("--max-steps", self.max_steps, 1), ("--epochs", self.epochs, 1),
                                   ("--epochs-per-stage", self.epochs_per_stage, 1), ("--limit", self.limit, 1),
                                   ("--batch-size", self.batch_size, 1), ("--grad-accum", self.grad_accum, 1),
                                   ("--lora-r", self.lora_r, 1), ("--warmup-steps", self.warmup_steps, 0)):
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


@dataclass
class TrainReport:
    out: str
    epochs: int
    global_step: int
    last_loss: float | None
    resumed_from: dict | None
    seconds: float


class _EpochItems:
    """A map-style dataset whose items the loop replaces at each epoch (same length every epoch)."""

    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def train(config: TrainConfig, progress: bool = True) -> TrainReport:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from torch.utils.data import DataLoader
    from tqdm import tqdm
    from transformers import get_scheduler

    from harness.backbones import load_backbone, model_fingerprint, model_name

    from harness.train.data import read_examples

    config.check()
    torch.set_grad_enabled(True)  # in case something imported vlmeval, which switches autograd off globally
    recipe = TRAINERS.get(config.method)(config)
    if config.bench not in recipe.benches:
        raise ValueError(f"trainer {config.method} trains on {', '.join(recipe.benches)}, not {config.bench!r}")
    if config.batch_size < 1 or config.grad_accum < 1:
        raise ValueError("--batch-size and --grad-accum must be at least 1")
    resumed = ckpt.resume_point(config.out, config.identity())  # refuses a foreign --out before any loading
    examples = read_examples(config.bench, config.data, config.split, config.limit)

    mixed = config.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if torch.cuda.is_available() and not config.cpu else "no"
    # A seedable sampler shuffles by (seed, epoch), so a resumed epoch replays the same order.
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision=mixed, cpu=config.cpu,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one INFO line per saved file otherwise
    set_seed(config.seed)
    backbone = load_backbone(model_name(config.model), device=str(accelerator.device), dtype="float32",
                             **recipe.backbone_options())
    module = recipe.setup(backbone)
    module.train()
    trainable = [p for p in module.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"trainer {config.method} left no parameter trainable")
    epochs = config.epochs or recipe.default_epochs()
    batches_per_epoch = math.ceil(len(examples) / (config.batch_size * accelerator.num_processes))
    total_steps = epochs * math.ceil(batches_per_epoch / config.grad_accum)
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_schedule, optimizer, num_warmup_steps=config.warmup_steps,
                              num_training_steps=total_steps)
    epoch_items = _EpochItems(recipe.epoch_items(examples, 0))  # one loader for the run; its items change with the curriculum
    loader = DataLoader(epoch_items, batch_size=config.batch_size, shuffle=True, collate_fn=recipe.collate)
    module, optimizer, scheduler, loader = accelerator.prepare(module, optimizer, scheduler, loader)
    # The model's weights are not part of accelerate's state: the checkpoint's adapter is the model.
    accelerator.register_save_state_pre_hook(lambda models, weights, _dir: (models.clear(), weights.clear()))
    accelerator.register_load_state_pre_hook(lambda models, _dir: models.clear())

    start_epoch, skip_batches, global_step = 0, 0, 0
    if resumed is not None:
        recipe.restore(accelerator.unwrap_model(module), config.out)
        accelerator.load_state(str(Path(config.out) / ckpt.STATE))
        start_epoch, skip_batches, global_step = resumed["epoch"], resumed["batches_done"], resumed["global_step"]
        log.info("resuming %s at epoch %d, batch %d (step %d)", config.out, start_epoch, skip_batches, global_step)
    identity = {"train": config.identity(), "model_revision": model_fingerprint(config.model),
                "base_model": backbone.signature(),  # checked when the checkpoint is loaded
                "epochs": epochs, **recipe.checkpoint_config()}

    def save(epoch: int, batches_done: int) -> None:
        if accelerator.is_main_process:
            ckpt.staging_dir(config.out)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(Path(config.out) / ckpt.STAGING / ckpt.STATE))
        if accelerator.is_main_process:
            tensors = recipe.checkpoint_tensors(accelerator.unwrap_model(module))
            ckpt.commit(config.out, tensors, identity, {"epoch": epoch, "batches_done": batches_done,
                                                        "global_step": global_step, "last_loss": last_loss})
        accelerator.wait_for_everyone()

    started = time.perf_counter()
    last_loss, running = None, []
    bar = tqdm(total=total_steps, initial=global_step, disable=not (progress and accelerator.is_main_process),
               desc=f"train {config.method}", unit="step", file=sys.stderr, dynamic_ncols=True)
    done = bool(config.max_steps and global_step >= config.max_steps)
    for epoch in range(start_epoch, epochs):
        if done:
            break
        epoch_items.items = recipe.epoch_items(examples, epoch)
        loader.set_epoch(epoch)
        n_batches = len(loader)
        batches_done = skip_batches if epoch == start_epoch else 0
        batches = accelerator.skip_first_batches(loader, batches_done) if batches_done else loader
        for batch in batches:
            with accelerator.accumulate(module):
                loss = module(**batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running.append(loss.detach().float().item())
            batches_done += 1
            if accelerator.sync_gradients:
                global_step += 1
                last_loss = sum(running) / len(running)
                running = []
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", epoch=epoch, **recipe.progress_fields(epoch))
                if config.max_steps and global_step >= config.max_steps:
                    done = True
                    break
        finished_epoch = batches_done >= n_batches
        save(epoch + 1 if finished_epoch else epoch, 0 if finished_epoch else batches_done)
    bar.close()
    return TrainReport(out=config.out, epochs=epochs, global_step=global_step, last_loss=last_loss,
                       resumed_from=resumed, seconds=round(time.perf_counter() - started, 2))
