"""`harness`: the command line. It only dispatches: every command is a module with
``add_commands(subparsers)``, found through the entry-point group ``harness.commands`` (built-ins
and a method's own commands are declared in pyproject.toml exactly like a plugin's). Command modules
keep their heavy imports inside the handlers so `--help` and `list` are instant.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from importlib.metadata import entry_points

from harness.commands._common import EXIT_USAGE, UsageError, method_flags

COMMAND_GROUP = "harness.commands"


def build_parser() -> argparse.ArgumentParser:
    from harness.api import PluginError

    parser = argparse.ArgumentParser(
        prog="harness", description="Evaluate latent and multimodal chain-of-thought methods on VLM benchmarks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for ep in entry_points(group=COMMAND_GROUP):  # declaration order: the order --help lists them
        try:
            module = ep.load()
        except ImportError as exc:
            raise PluginError(f"command plugin {ep.name!r} ({ep.value}) does not import: {exc}; "
                              "reinstall or uninstall the package that declares it") from exc
        module.add_commands(sub)
    for command in sub.choices.values():
        # A method's option must never be taken for a prefix of a command's flag (--mode for --model).
        command.allow_abbrev = False
    if not sub.choices:
        raise SystemExit("harness: error: no commands are registered: the package is not installed; "
                         "run `pip install -e .` in the checkout")
    return parser


def _on_sigterm(signum, frame):
    from harness.run.runner import Terminated

    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    from harness.api import PluginError

    try:
        parser = build_parser()
    except PluginError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: `run --processes N` relaunches it
    if extra and not getattr(args, "accepts_method_flags", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.captureWarnings(True)  # warnings go through logging: one line each, clear of progress bars
    from harness.api import DataError, UnknownName

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)  # `timeout`, Slurm, Docker: like Ctrl-C

    try:
        args.method_flags = method_flags(extra)
        return args.handler(args)
    except (UsageError, UnknownName, PluginError, DataError, ValueError, FileNotFoundError, PermissionError, KeyError) as exc:
        if args.verbose:
            raise
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"harness: error: {message.splitlines()[0] if message else type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        from harness.run.runner import Terminated

        terminated = isinstance(exc, Terminated)
        kept = ("training resumes from its last saved checkpoint" if args.command == "train"
                else "what was computed is stored")
        print(f"harness: {'terminated (SIGTERM)' if terminated else 'interrupted'}; {kept}: "
              "re-run the same command to resume", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # `harness runs | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
