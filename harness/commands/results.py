"""`harness runs|show|export`: reading stored results."""
from __future__ import annotations

import json
from pathlib import Path

from harness.commands._common import UsageError, db_arg

def _store(args, read_only=True):
    from harness.run.store import Store

    return Store(args.db, read_only=read_only)


def cmd_runs(args) -> int:
    from harness.run.reports import format_runs

    runs = _store(args).runs(method=args.method, benchmark=args.bench)
    print(json.dumps(runs, indent=2) if args.json else format_runs(runs))
    return 0


def cmd_show(args) -> int:
    from harness.run.reports import format_run

    store = _store(args)
    run = store.run(args.run_id)
    from sqlalchemy.exc import OperationalError

    try:
        scores = store.scores(args.run_id)
    except OperationalError:  # a database made before the scores table existed (opened read-only)
        scores = []
    print(json.dumps({**run, "scores": scores}, indent=2, default=str) if args.json else format_run(run, scores))
    return 0


_EXPORT_SUFFIXES = {".jsonl": "jsonl", ".md": "md", ".markdown": "md", ".tex": "latex", ".html": "html",
                    ".htm": "html"}


def cmd_export(args) -> int:
    from harness.run.reports import export

    if args.out == "-":
        args.out = None  # standard output
    fmt = args.format or _EXPORT_SUFFIXES.get(Path(args.out or "").suffix.lower(), "csv")
    what = args.what or ("leaderboard" if fmt in ("md", "latex", "html") else "runs")
    if what == "leaderboard":
        from harness.commands.leaderboard import export_leaderboard

        return export_leaderboard(args, fmt)
    if fmt not in ("csv", "jsonl"):
        raise UsageError(f"--format {fmt} is for the leaderboard table (--what leaderboard); "
                         f"{what} rows export as csv or jsonl")
    n = export(_store(args), args.out, fmt=fmt, what=what, run_ids=args.run or None)
    if args.out:
        print(f"wrote {n} {what} rows to {args.out}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("runs", help="stored runs with their metrics")
    db_arg(p)
    p.add_argument("--method")
    p.add_argument("--bench")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("show", help="one run: configuration, environment, metrics, breakdown")
    p.add_argument("run_id", type=int)
    db_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("export", help="runs or per-sample rows (CSV, JSON lines), or the leaderboard table "
                                      "(CSV, Markdown, LaTeX, HTML)")
    db_arg(p)
    p.add_argument("--what", choices=["runs", "samples", "leaderboard"],
                   help="default: leaderboard for md/latex/html, else runs")
    p.add_argument("--format", choices=["csv", "jsonl", "md", "latex", "html"],
                   help="default: from the file name (.jsonl .md .tex .html), else csv")
    p.add_argument("--out", help="the file to write (default: standard output)")
    p.add_argument("--run", type=int, action="append", help="runs/samples: only this run id (repeatable)")
    from harness.commands.leaderboard import add_table_filters

    add_table_filters(p)
    p.set_defaults(handler=cmd_export)
