"""`harness fixtures`: the fixture subsets in each benchmark's official format."""
from __future__ import annotations

from harness.commands._common import UsageError, new_output

def cmd_fixtures(args) -> int:
    from harness.testing.fixtures import write_all

    new_output(args.out, "the fixture files")
    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    for name, path in write_all(args.out, n=args.n, seed=args.seed).items():
        print(f"{name}: {path}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("fixtures", help="write the fixture subsets (official formats, generated images)")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_fixtures)
