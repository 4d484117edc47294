"""The training loop, whole, in one file (nanoGPT / torchtune style).

``train(config)`` runs on one CPU, one GPU, or several GPUs under ``accelerate launch`` (DDP or
DeepSpeed, from the accelerate config): the same code. From the recipe it takes the parameter groups
(per-module learning rates), which of them are frozen at each stage, the stage/epoch schedule, the
items of each epoch (a curriculum changes them by stage) and, per batch, a dict of named losses: each
is logged and shown in the progress bar, their sum is what is optimised. ``accelerate`` handles
devices, bf16 autocast on GPU, gradient accumulation and distributed reduction. A checkpoint
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
from dataclasses import dataclass
from pathlib import Path

from harness.api import TRAINERS
from harness.api.recipe import TrainConfig
from harness.latent import checkpoint as ckpt

log = logging.getLogger("harness")
__all__ = ["TrainConfig", "TrainReport", "train"]


@dataclass
class TrainReport:
    out: str
    epochs: int
    global_step: int
    last_loss: float | None  # the optimised total, averaged over the last optimizer step's micro-batches
    resumed_from: dict | None
    seconds: float
    last_losses: dict | None = None  # each named loss, averaged the same way


class _EpochItems:
    """A map-style dataset whose items the loop replaces at each epoch (same length every epoch)."""

    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def _named_losses(losses, method: str) -> dict:
    if not isinstance(losses, dict) or not losses:
        raise TypeError(f"trainer {method}: the module's forward must return a dict of named losses, "
                        f"got {type(losses).__name__}")
    return losses


def _apply_frozen(module, grouped: set[int], frozen: tuple[str, ...]) -> None:
    """Grouped parameters train unless their name is (under) one of ``frozen``; others stay as they are.
    (Under DDP, a recipe that freezes grouped parameters at some stage needs the accelerate config's
    ``find_unused_parameters``; DeepSpeed and single devices need nothing.)"""
    for name, p in module.named_parameters():
        if id(p) in grouped:
            p.requires_grad_(not any(name == f or name.startswith(f + ".") for f in frozen))


def train(config: TrainConfig, progress: bool = True) -> TrainReport:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from torch.utils.data import DataLoader
    from tqdm import tqdm
    from transformers import get_scheduler

    from harness.backbones import load_backbone, model_fingerprint, model_name
    from harness.data.readers import read_examples
    from harness.latent.train import total_loss

    config.check()
    torch.set_grad_enabled(True)  # a caller's no_grad must not make training silently learn nothing
    recipe = TRAINERS.get(config.method)(config)
    if config.bench not in recipe.benches:
        raise ValueError(f"trainer {config.method} trains on {', '.join(recipe.benches)}, not {config.bench!r}")
    schedule = recipe.schedule()
    # Resume compares resolved option values, so an option given explicitly at its default is the same run.
    train_identity = {**config.identity(), "options": dataclasses.asdict(recipe.options)}

    def upgrade(saved: dict) -> dict:
        saved = recipe.upgrade_identity(dict(saved))
        try:
            saved["options"] = dataclasses.asdict(recipe.Options(**saved.get("options", {})))
        except TypeError:  # an option this recipe no longer has: the comparison names it
            pass
        return saved

    resumed = ckpt.resume_point(config.out, train_identity, upgrade)  # refuses a foreign --out before loading
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
    groups = [g for g in recipe.param_groups(module) if g["params"]]
    grouped = {id(p) for g in groups for p in g["params"]}
    if not grouped:
        raise ValueError(f"trainer {config.method} left no parameter trainable")
    epochs = config.epochs or schedule.total
    batches_per_epoch = math.ceil(len(examples) / (config.batch_size * accelerator.num_processes))
    total_steps = epochs * math.ceil(batches_per_epoch / config.grad_accum)
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_schedule, optimizer, num_warmup_steps=config.warmup_steps,
                              num_training_steps=total_steps)
    # One loader for the run; its items change with the curriculum.
    epoch_items = _EpochItems(recipe.epoch_items(examples, schedule.stage_of(0)))
    loader = DataLoader(epoch_items, batch_size=config.batch_size, shuffle=True, collate_fn=recipe.collate)
    module, optimizer, scheduler, loader = accelerator.prepare(module, optimizer, scheduler, loader)
    # The model's weights are not part of accelerate's state: the checkpoint's adapter is the model.
    accelerator.register_save_state_pre_hook(lambda models, weights, _dir: (models.clear(), weights.clear()))
    accelerator.register_load_state_pre_hook(lambda models, _dir: models.clear())
    trainable = [p for g in groups for p in g["params"]]

    start_epoch, skip_batches, global_step = 0, 0, 0
    if resumed is not None:
        recipe.restore(accelerator.unwrap_model(module), config.out)
        accelerator.load_state(str(Path(config.out) / ckpt.STATE))
        start_epoch, skip_batches, global_step = resumed["epoch"], resumed["batches_done"], resumed["global_step"]
        log.info("resuming %s at epoch %d, batch %d (step %d)", config.out, start_epoch, skip_batches, global_step)
    identity = {"train": train_identity, "model_revision": model_fingerprint(config.model),
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
    last_loss, last_losses, running = None, None, []
    bar = tqdm(total=total_steps, initial=global_step, disable=not (progress and accelerator.is_main_process),
               desc=f"train {config.method}", unit="step", file=sys.stderr, dynamic_ncols=True)
    done = bool(config.max_steps and global_step >= config.max_steps)
    for epoch in range(start_epoch, epochs):
        if done:
            break
        stage = schedule.stage_of(epoch)
        _apply_frozen(accelerator.unwrap_model(module), grouped, recipe.frozen(stage))
        epoch_items.items = recipe.epoch_items(examples, stage)
        loader.set_epoch(epoch)
        n_batches = len(loader)
        batches_done = skip_batches if epoch == start_epoch else 0
        batches = accelerator.skip_first_batches(loader, batches_done) if batches_done else loader
        for batch in batches:
            with accelerator.accumulate(module):
                losses = _named_losses(module(**batch), config.method)
                loss = total_loss(losses)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running.append({"loss": loss.detach().float().item(),
                            **{k: v.detach().float().item() for k, v in losses.items()}})
            batches_done += 1
            if accelerator.sync_gradients:
                global_step += 1
                means = {k: sum(r[k] for r in running) / len(running) for k in running[0]}
                if accelerator.num_processes > 1:  # the step's loss over the global batch, not this process's share
                    reduced = accelerator.reduce(torch.tensor(list(means.values()), device=accelerator.device), "mean")
                    means = dict(zip(means, reduced.tolist()))
                last_loss = means.pop("loss")
                last_losses = means
                running = []
                bar.update(1)
                shown = {"loss": f"{last_loss:.4f}", **{k: f"{v:.4f}" for k, v in means.items()}}
                bar.set_postfix(**shown, epoch=epoch, **({"stage": stage} if len(schedule.stage_epochs) > 1 else {}))
                log.debug("step %d epoch %d stage %d %s", global_step, epoch, stage,
                          " ".join(f"{k}={v}" for k, v in shown.items()))
                if config.max_steps and global_step >= config.max_steps:
                    done = True
                    break
        finished_epoch = batches_done >= n_batches
        save(epoch + 1 if finished_epoch else epoch, 0 if finished_epoch else batches_done)
        if last_losses is not None:
            log.info("%s epoch %d (stage %d): step %d, loss %.4f (%s)", config.method, epoch, stage, global_step,
                     last_loss, ", ".join(f"{k} {v:.4f}" for k, v in last_losses.items()))
    bar.close()
    return TrainReport(out=config.out, epochs=epochs, global_step=global_step, last_loss=last_loss,
                       resumed_from=resumed, seconds=round(time.perf_counter() - started, 2), last_losses=last_losses)
