"""`harness zoo list|build`: the model zoo, tiny VLMs trained here from scratch on easy-VQA."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.commands._common import UsageError, new_output, quiet_libraries


def _zoo_root() -> Path:
    from harness.backbones import zoo_root

    return zoo_root()


def cmd_list(args) -> int:
    from harness.zoo import ZOO, names

    root = _zoo_root()
    if args.json:
        rows = []
        for name in names():
            record = root / name / "zoo.json"
            built = json.loads(record.read_text()) if record.is_file() else None
            rows.append({"name": name, "family": ZOO[name].family, "description": ZOO[name].description,
                         "built": str(root / name) if built else None,
                         "direct_accuracy": built["test"]["direct"]["accuracy"] if built else None})
        print(json.dumps(rows, indent=2))
        return 0
    for name in names():
        recipe, record = ZOO[name], root / name / "zoo.json"
        if record.is_file():
            built = json.loads(record.read_text())
            direct = built["test"]["direct"]
            state = (f"built: direct {direct['accuracy']:.1%} on {direct['n']:,} test questions, "
                     f"{built['parameters'] / 1e6:.1f} M parameters, {built['build_seconds'] / 60:.1f} min build")
        else:
            state = f"not built (harness zoo build {name})"
        print(f"{name:<18} {recipe.family:<9} {state}\n{'':<28} {recipe.description}")
    print(f"(zoo folder: {root}; load one with --model zoo:NAME)")
    return 0


def cmd_build(args) -> int:
    from harness.zoo import ZOO, names

    if args.name not in ZOO:
        raise UsageError(f"unknown zoo model {args.name!r}; choose one of: {', '.join(names())}")
    if args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.eval_limit is not None and args.eval_limit < 1:
        raise UsageError(f"--eval-limit must be at least 1, got {args.eval_limit}")
    out = new_output(args.out or str(_zoo_root() / args.name), "a model's files")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out} is a folder that is not empty; pass a new or empty folder, or remove it to "
                         "rebuild (nothing was overwritten)")
    quiet_libraries()
    from harness.zoo.build import build

    record = build(ZOO[args.name], out, seed=args.seed, threads=args.threads, steps=args.steps,
                   eval_limit=args.eval_limit, log=lambda line: print(line, file=sys.stderr, flush=True))
    direct = record["test"]["direct"]
    print(f"{out}: direct {direct['accuracy']:.2%} on {direct['n']:,} easyvqa test questions ("
          + ", ".join(f"{k} {v['accuracy']:.2%}" for k, v in direct["by_type"].items())
          + f"); built in {record['build_seconds'] / 60:.1f} min")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("zoo", help="the model zoo: tiny VLMs trained here on easy-VQA (list, build)")
    zoo = p.add_subparsers(dest="zoo_command", required=True, metavar="SUBCOMMAND")
    q = zoo.add_parser("list", help="the zoo's models, and which are built")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_list)
    q = zoo.add_parser("build", help="train a zoo model from scratch (CPU; minutes) and evaluate it")
    q.add_argument("name")
    q.add_argument("--out", help="folder to write (new or empty; default: the zoo folder's NAME)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=2, help="torch CPU threads (results are deterministic per "
                                                           "seed and thread count)")
    q.add_argument("--steps", type=int, help="override the recipe's training steps (quick checks)")
    q.add_argument("--eval-limit", type=int, help="evaluate on this many test questions, evenly spread "
                                                   "(default: all)")
    q.set_defaults(handler=cmd_build)
