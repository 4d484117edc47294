"""`harness ci`: the suite's cases against their golden baselines, with an exit code CI can trust."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from harness.commands._common import UsageError, quiet_libraries


def _write(path: str, text: str, what: str) -> None:
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--{what} {path} is a folder; pass a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def cmd_ci(args) -> int:
    from harness.ci import reports
    from harness.ci.run import Ledger
    from harness.ci.suite import DEFAULT_SUITE, SuiteError, load_suite
    from harness.ci.verify import exit_code, update, verify

    try:
        suite = load_suite(args.suite or DEFAULT_SUITE)
        cases = [suite.case(name) for name in args.cases] if args.cases else suite.cases
    except SuiteError as exc:
        raise UsageError(str(exc)) from None
    for option in ("junit", "markdown"):
        value = getattr(args, option)
        if value and Path(value).is_dir():
            raise UsageError(f"--{option} {value} is a folder; pass a file path")
    db = args.db or f"sqlite:///{suite.folder / 'ci.db'}"
    quiet_libraries()
    ledger = Ledger(suite.folder / "ledger.json")
    logger = logging.getLogger("harness")
    level = logger.level
    if not getattr(args, "verbose", False):  # one line per case (verify's) instead of the runner's log
        logger.setLevel(logging.WARNING)
    try:
        results, info, seconds = (update if args.update else verify)(suite, cases, db, ledger)
    finally:
        logger.setLevel(level)
    code = exit_code(results)
    markdown = reports.markdown(results, code)
    if args.junit:
        _write(args.junit, reports.junit(results, seconds), "junit")
    if args.markdown:
        _write(args.markdown, markdown, "markdown")
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as f:
            f.write(markdown)
    if args.json:
        print(reports.as_json(results, code, info), end="")
    else:
        print(reports.table(results))
        for check in results:
            if check.verdict in ("fail", "error") and check.flips:
                print(f"\n{check.case} ({check.check}):\n  " + "\n  ".join(reports._flip_lines(check)))
    print(reports.summary_line(results, code)
          + (f"; baselines in {suite.baselines}" if args.update else ""), file=sys.stderr)
    return code


def add_commands(sub) -> None:
    p = sub.add_parser("ci", help="regression checks: the suite's cases against golden per-sample baselines "
                                  "(exit 0 pass, 1 regression, 2 unchecked)")
    p.add_argument("cases", nargs="*", metavar="CASE", help="only these cases (default: all)")
    p.add_argument("--suite", help="the suite file (default: results/ci/suite.toml)")
    p.add_argument("--db", help="SQLAlchemy URL for the cases' runs (default: ci.db beside the suite)")
    p.add_argument("--update", action="store_true", help="rewrite the baselines of CASE ... (or all) and say what changed")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML")
    p.add_argument("--markdown", metavar="FILE", help="also write the Markdown summary")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    p.set_defaults(handler=cmd_ci)
