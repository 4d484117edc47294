"""`harness tiny-model`: a tiny random checkpoint of a backbone family (tests, demos; no network)."""
from __future__ import annotations

from harness.commands._common import UsageError, new_output, quiet_libraries

def cmd_tiny_model(args) -> int:
    quiet_libraries()
    from harness.backbones.tiny import write_tiny_model

    out = new_output(args.out, "a model's files")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {args.out} is a folder that is not empty; pass a new or empty folder "
                         "(nothing was overwritten)")
    out = write_tiny_model(args.family, out, hidden_size=args.hidden_size, layers=args.layers,
                           heads=args.heads, kv_heads=args.kv_heads, seed=args.seed)
    print(out)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("tiny-model", help="write a tiny random checkpoint (tests, demos; no network)")
    from harness.backbones.tiny import FAMILIES  # no torch at import: cheap at parse time

    p.add_argument("--family", required=True, choices=list(FAMILIES))
    p.add_argument("--out", required=True)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_tiny_model)
