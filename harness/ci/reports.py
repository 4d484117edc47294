"""The reports of a ``harness ci`` invocation: a terminal table, JUnit XML, Markdown, JSON."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from harness.ci.checks import Check

MAX_FLIPS_SHOWN = 20


def counts(checks: list[Check]) -> dict[str, int]:
    out = {v: 0 for v in ("pass", "fail", "warn", "skip", "error")}
    for check in checks:
        out[check.verdict] += 1
    return out


def _rows(checks: list[Check]) -> list[list[str]]:
    return [[c.case, c.check, c.golden, c.now, c.verdict.upper() if c.verdict in ("fail", "error") else c.verdict,
             c.detail] for c in checks]


def table(checks: list[Check]) -> str:
    header = ["case", "check", "golden", "now", "verdict", "detail"]
    rows = _rows(checks)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(5)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[5]]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[5] for r in rows]
    return "\n".join(lines)


def summary_line(checks: list[Check], exit_code: int) -> str:
    n = counts(checks)
    return (f"harness ci: {len(checks)} checks: {n['pass']} passed, {n['fail']} failed, {n['error']} errors, "
            f"{n['warn']} warnings, {n['skip']} skipped; exit {exit_code}")


def _flip_lines(check: Check) -> list[str]:
    def right(ok: bool) -> str:
        return "right" if ok else "wrong"

    shown = [f"{f['uid']}: {f['golden']!r} ({right(f['golden_right'])}) → {f['now']!r} ({right(f['now_right'])})"
             for f in check.flips[:MAX_FLIPS_SHOWN]]
    if len(check.flips) > MAX_FLIPS_SHOWN:
        shown.append(f"... and {len(check.flips) - MAX_FLIPS_SHOWN} more (--json lists all)")
    return shown


def junit(checks: list[Check], seconds: dict[str, float] | None = None) -> str:
    """One <testcase> per check (classname: the case); fail → <failure>, error → <error>, skip → <skipped>,
    a warning passes with its text in <system-out>."""
    seconds = seconds or {}
    n = counts(checks)
    root = ET.Element("testsuites", name="harness ci", tests=str(len(checks)), failures=str(n["fail"]),
                      errors=str(n["error"]), skipped=str(n["skip"]))
    suite = ET.SubElement(root, "testsuite", name="harness ci", tests=str(len(checks)), failures=str(n["fail"]),
                          errors=str(n["error"]), skipped=str(n["skip"]),
                          time=f"{sum(seconds.values()):.3f}")
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=f"harness-ci.{check.case}", name=check.check,
                             time=f"{seconds.get(check.case, 0.0) if check.check in ('exact', 'statistical', 'run') else 0.0:.3f}")
        body = "\n".join([f"golden: {check.golden}", f"now: {check.now}", check.detail, *_flip_lines(check)])
        if check.verdict == "fail":
            ET.SubElement(case, "failure", message=check.detail or "regression", type="regression").text = body
        elif check.verdict == "error":
            ET.SubElement(case, "error", message=check.detail or "error", type="error").text = body
        elif check.verdict == "skip":
            ET.SubElement(case, "skipped", message=check.detail or "skipped")
        elif check.verdict == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {body}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(checks: list[Check], exit_code: int) -> str:
    marks = {"pass": "✅ pass", "fail": "❌ **fail**", "error": "⛔ **error**", "warn": "⚠️ warn", "skip": "➖ skip"}
    out = [f"## {summary_line(checks, exit_code)}", "", "| case | check | golden | now | verdict | detail |",
           "|---|---|---:|---:|---|---|"]
    out += [f"| {_md(c.case)} | {c.check} | {_md(c.golden)} | {_md(c.now)} | {marks[c.verdict]} | {_md(c.detail)} |"
            for c in checks]
    bad = [c for c in checks if c.verdict in ("fail", "error") and (c.flips or c.detail)]
    for check in bad:
        out += ["", f"### {check.case}: {check.check}", "", check.detail]
        if check.flips:
            out += [""] + [f"- `{line}`" for line in _flip_lines(check)]
    return "\n".join(out) + "\n"


def as_json(checks: list[Check], exit_code: int, cases: dict | None = None) -> str:
    return json.dumps({"exit_code": exit_code, "counts": counts(checks), "cases": cases or {},
                       "checks": [c.to_dict() for c in checks]}, indent=2, default=str) + "\n"
