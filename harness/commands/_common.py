"""What every command shares: ``UsageError``, option parsing, quiet libraries, ``--db``/``--out`` arguments.

Stdlib only at import time: ``harness --help`` must stay instant. Every command module (and a method's
own commands) imports these from here, never from ``harness.cli``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

EXIT_USAGE = 2
DB_HELP = "SQLAlchemy URL (default: $HARNESS_DB or sqlite:///results/harness.db)"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def db_arg(parser) -> None:
    """The one ``--db`` argument every command that reads or writes results takes."""
    parser.add_argument("--db", help=DB_HELP)


def key_values(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--opt expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = value
    return out


def method_flags(extra: list[str]) -> dict[str, str]:
    """Flags argparse does not know, as method options: ``--alpha 4 --layer=12 --flag`` → strings.

    Each method declares its options (``harness list``); unknown names fail in ``coerce_options``.
    """
    out, i = {}, 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or token == "--":
            raise UsageError(f"unexpected argument {token!r}; method options are given as --name VALUE")
        name = token[2:]
        if "=" in name:
            name, value = name.split("=", 1)
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            value = extra[i + 1]
            i += 1
        else:
            value = "true"
        out[name.replace("-", "_")] = value
        i += 1
    return out


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # Libraries' deprecation notices are for their developers, not for someone reading results.
    warnings.filterwarnings("ignore", category=FutureWarning)


def new_output(path: str, what: str) -> Path:
    """An --out that must not silently replace a file or mix with a folder's contents."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {path} is an existing file; {what} go into a folder: pass a new or empty folder")
    return out
