"""CLI commands of the leaderboard: ``leaderboard`` (the Gradio app), ``import-paper-results``, and the
table filters and writer behind ``harness export --what leaderboard``. Gradio, pandas and jinja2 are
imported inside the handlers so ``harness --help`` stays instant."""
from __future__ import annotations

import argparse

from harness.commands._common import db_arg


def add_table_filters(p: argparse.ArgumentParser) -> None:
    """The main table's filters, shared by ``export`` (and mirrored by the app's controls)."""
    g = p.add_argument_group("leaderboard table (--what leaderboard)")
    g.add_argument("--backbone", action="append", default=[], help="last path component of the model id "
                   "(repeatable, case-insensitive)")
    g.add_argument("--method", action="append", default=[], help="registry name (repeatable)")
    g.add_argument("--bench", action="append", default=[], help="benchmark (repeatable)")
    g.add_argument("--kind", action="append", default=[], help="official|judge|rule-based|reported (repeatable)")
    g.add_argument("--since", help="runs started on or after this date (YYYY-MM-DD)")
    g.add_argument("--until", help="runs started on or before this date (YYYY-MM-DD)")
    g.add_argument("--latest", action="store_true", help="only the newest run of each method, backbone, "
                   "benchmark and scorer")
    g.add_argument("--no-reported", action="store_true", help="leave out the papers' numbers")
    g.add_argument("--layout", choices=["long", "matrix"], default="long",
                   help="long: one row per run and scoring (default); matrix: methods × benchmarks")


def table_filters(args):
    from leaderboard.queries import Filters

    return Filters.make(backbones=args.backbone, methods=args.method, benchmarks=args.bench, kinds=args.kind,
                        since=args.since, until=args.until, latest_only=args.latest,
                        include_reported=not args.no_reported)


def export_leaderboard(args, fmt: str) -> int:
    from leaderboard.exports import FORMATS, describe, render, write
    from leaderboard.queries import LeaderboardDB

    if fmt not in FORMATS:
        raise ValueError(f"the leaderboard table exports as {', '.join(FORMATS)}, not {fmt}")
    if args.run:
        raise ValueError("--run selects runs for --what runs|samples; filter the leaderboard with "
                         "--method, --bench, --backbone, --kind, --since, --until")
    from harness.run.reports import output_path

    out = output_path(args.out)  # None: standard output; a folder fails here, before any query
    filters = table_filters(args)
    db = LeaderboardDB(args.db)
    try:
        table = db.table(filters)
    finally:
        db.close()
    write(render(table, fmt, layout=args.layout, description=describe(filters)), out)
    if out is not None:
        print(f"wrote the leaderboard table ({len(table)} rows, {args.layout}) as {fmt} to {out}")
    return 0


def cmd_leaderboard(args) -> int:
    from harness.run.store import check_url

    check_url(args.db, write=False)  # a bad --db, then a taken port: one line each, before gradio loads
    from leaderboard.ports import check_port

    check_port(args.host, args.port)
    from leaderboard.app import serve

    serve(args.db, host=args.host, port=args.port, data=args.data)
    return 0


def cmd_import_paper_results(args) -> int:
    from leaderboard.paper_results import import_csv

    counts = import_csv(args.csv, args.db)
    print(f"reported results from {args.csv}: {counts['added']} added, {counts['updated']} updated, "
          f"{counts['unchanged']} unchanged")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("leaderboard", help="browse the results: a read-only Gradio app (127.0.0.1 by default)")
    db_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--data", action="append", default=[], metavar="BENCH=PATH",
                   help="benchmark data, to show each sample's image on the run page (repeatable); "
                        "used only when its fingerprint equals the run's")
    p.set_defaults(handler=cmd_leaderboard)

    p = sub.add_parser("import-paper-results", help="store the numbers papers report (CSV: source,method,"
                                                    "backbone,benchmark,metric,value,note) for the leaderboard")
    p.add_argument("csv")
    db_arg(p)
    p.set_defaults(handler=cmd_import_paper_results)
