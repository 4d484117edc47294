"""`harness train`: any registered trainer recipe, through the one training loop (harness.train.loop).

Heavy imports stay inside the handlers: `harness --help` must stay instant.
"""
from __future__ import annotations

import json
import os

from harness.commands._common import quiet_libraries

# TrainConfig fields a recipe may give its own defaults (Recipe.train_defaults).
RECIPE_DEFAULTED = ("batch_size", "grad_accum", "lr", "weight_decay", "max_grad_norm")


def cmd_train(args) -> int:
    from harness.api import TRAINERS, coerce_options
    from harness.api.recipe import TrainConfig
    from harness.train.loop import train

    recipe_cls = TRAINERS.get(args.method)
    options = coerce_options(recipe_cls, args.method_flags)
    quiet_libraries()
    # Given on the command line, else the recipe's published default, else the loop's.
    defaulted = {name: getattr(args, name) if getattr(args, name) is not None
                 else recipe_cls.train_defaults.get(name, TrainConfig.__dataclass_fields__[name].default)
                 for name in RECIPE_DEFAULTED}
    config = TrainConfig(
        method=args.method, bench=args.bench, model=args.model, data=args.data, out=args.out, split=args.split,
        epochs=args.epochs, max_steps=args.max_steps, warmup_steps=args.warmup_steps, lr_schedule=args.lr_schedule,
        seed=args.seed, limit=args.limit, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, lora_targets=args.lora_targets, mixed_precision=args.mixed_precision,
        cpu=args.cpu, options=options, **defaulted,
    )
    report = train(config, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return 0  # under torchrun / accelerate launch the main process reports (the loss is over all of them)
    if args.json:
        print(json.dumps(report.__dict__, indent=2, default=str))
    else:
        loss = f"{report.last_loss:.4f}" if report.last_loss is not None else "n/a"
        print(f"trained {args.method} on {args.bench}: {report.global_step} optimizer steps, last loss {loss}, "
              f"{report.seconds} s{' (resumed)' if report.resumed_from else ''}")
        print(f"checkpoint: {report.out}  (harness run --method {args.method} --checkpoint {report.out} ...)")
    return 0


def add_commands(sub) -> None:
    # The recipe's own options (e.g. --epochs-per-stage) arrive as extra
    # --name VALUE flags (args.method_flags), so this parser never names a method's option.
    p = sub.add_parser("train", help="train a method (LoRA) on a benchmark's training data; resumable",
                       description="Extra --name VALUE flags are the trainer's own options (its Options, "
                                   "e.g. --epochs-per-stage 4).")
    p.add_argument("--method", required=True, help="a registered trainer (cot, mm-cot, ivt-lr, lare, modal-mixed)")
    p.add_argument("--bench", required=True, help="training data reader: m3cot, scienceqa, easyvqa, llava, easyvqa-traces or zebra-cot")
    p.add_argument("--model", required=True, help="hub id or local checkpoint folder of the base VLM")
    p.add_argument("--data", help="m3cot: a save_to_disk folder / parquet / jsonl with a train split; "
                                  "scienceqa: the folder with problems.json and images/; easyvqa: optional "
                                  "(default: the installed easy-vqa package)")
    p.add_argument("--out", required=True, help="checkpoint folder (new or empty; the same command resumes it)")
    p.add_argument("--split", default="train")
    p.add_argument("--epochs", type=int, help="total epochs (default: the recipe's; ivt-lr: E * (stages + 1))")
    p.add_argument("--max-steps", type=int, help="stop (and save) after N optimizer steps")
    # These five default to the recipe's published values (ivt-lr: batch 4 x accumulation 16 = 64 per
    # process, lr 4e-5, weight decay 0.01, gradient clip 0.7: its DeepSpeed config), else the loop's.
    p.add_argument("--batch-size", type=int, help="per device (default: the recipe's, else 4)")
    p.add_argument("--grad-accum", type=int, help="gradient accumulation steps (default: the recipe's, else 1)")
    p.add_argument("--lr", type=float, help="default: the recipe's, else 4e-5")
    p.add_argument("--weight-decay", type=float, help="default: the recipe's, else 0")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--lr-schedule", default="constant", help="constant, linear, cosine, ... (transformers)")
    p.add_argument("--max-grad-norm", type=float, help="gradient clip (default: the recipe's, else 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="first N training examples")
    p.add_argument("--lora-r", type=int, default=64)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                   help="language-model Linear layer names (the vision tower stays frozen)")
    p.add_argument("--mixed-precision", default="auto", help="auto (bf16 on GPU), no, bf16, fp16")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=cmd_train, accepts_method_flags=True)
