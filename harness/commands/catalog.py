"""`harness list`: the registered methods, benchmarks and backbone families."""
from __future__ import annotations


def cmd_list(args) -> int:
    from harness.api import METHODS

    from harness.api import BENCHMARKS
    from harness.backbones import FAMILY_NAMES

    def section(title, entries):
        print(title)
        width = max(len(name) for name, _ in entries)
        for name, text in entries:
            print(f"  {name:<{width}}  {text}")

    section("methods:", [(n, cls.description) for n, cls in METHODS.items()])
    section("benchmarks:", [(n, cls.description) for n, cls in BENCHMARKS.items()])
    section("backbone families:", sorted(FAMILY_NAMES.items()))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("list", help="methods, benchmarks and backbone families")
    p.set_defaults(handler=cmd_list)
