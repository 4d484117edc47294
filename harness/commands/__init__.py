"""The command line's commands, one module each with ``add_commands(subparsers)``; found through the
entry-point group ``harness.commands`` (a method's own commands, e.g. ``methods/l2v_cot/commands.py``,
are declared the same way). Shared helpers live in :mod:`._common`.

The top layer: may import anything in ``harness`` (inside handlers, so ``harness --help`` stays
instant), never ``methods`` or ``harness.cli``.
"""
