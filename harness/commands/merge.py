"""`harness merge A B ... --into C`: union runs and their samples from several results databases into one
(e.g. the per-node files of ``harness run --shard I/N --db sqlite:///nodeI.db``); see :mod:`harness.run.merge`."""
from __future__ import annotations

import json


def cmd_merge(args) -> int:
    from harness.run.merge import format_report, merge

    report = merge(args.sources, args.into)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(format_report(report, args.into))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "merge", help="union runs and samples from several results databases into one (e.g. --shard outputs)",
        description="Union the runs and sample rows of SOURCE databases (read only) into --into. Runs are matched "
                    "by their key; rows stored twice must agree (else nothing is written); a run whose planned "
                    "positions are all stored is scored and finished, one with rows missing stays partial. "
                    "Everything is written in one transaction; merging the same databases again changes nothing.")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a database file or URL (sqlite:///PATH, postgresql+psycopg://...), read only")
    p.add_argument("--into", required=True, metavar="TARGET",
                   help="the database to merge into: a file or URL, created if missing (it may hold runs already)")
    p.add_argument("--json", action="store_true", help="print what was merged as JSON")
    p.set_defaults(handler=cmd_merge)
