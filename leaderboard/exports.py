"""The leaderboard table as CSV, Markdown, LaTeX or a self-contained HTML page (jinja2 templates).

HTML is autoescaped; LaTeX and Markdown go through escaping filters, so a method or scorer name
cannot break the document. Files are written to a temporary name and renamed (never half-written).
"""
from __future__ import annotations

import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from .queries import BEST, COLUMNS, LABELS, best_mask, matrix, matrix_best_mask

FORMATS = ("csv", "md", "latex", "html")
SUFFIXES = {".csv": "csv", ".md": "md", ".markdown": "md", ".tex": "latex", ".html": "html", ".htm": "html"}
TEMPLATES = {"md": "table.md.jinja", "latex": "table.tex.jinja", "html": "table.html.jinja"}
# Shown in documents (the model path is in the CSV; the backbone column names it).
DOC_COLUMNS = [c for c in COLUMNS if c != "model"]
_DIGITS = {"accuracy": 2, "se": 2, "reported": 1, "delta": 2, "tokens": 1, "tokens_correct": 1,
           "reported_tokens_correct": 1, "latent_steps": 1, "samples_per_s": 2, "latency_s": 3}
LEGEND = ("Bold: best in its column among measured rows of the same benchmark and scoring kind "
          "(accuracy and samples/s highest, generated tokens lowest). Rows of kind 'reported' and the "
          "'reported' columns are the papers' numbers, not measured here; a reported number sits beside a "
          "measured row only when method, backbone and benchmark all match.")

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "±": r"$\pm$", "Δ": r"$\Delta$", "−": "-", "<": r"\textless{}", ">": r"\textgreater{}"}
_TEX_RE = re.compile("|".join(re.escape(k) for k in _TEX))


def tex_escape(text: Any) -> str:
    return _TEX_RE.sub(lambda m: _TEX[m.group()], str(text))


def md_escape(text: Any) -> str:
    # A pipe ends a cell, a newline ends a row; the others would turn text into emphasis or code.
    return re.sub(r"([\\|*_`\[\]<>])", r"\\\1", str(text)).replace("\n", " ")


def _env(fmt: str) -> Environment:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(enabled_extensions=("html.jinja",), default=False),
                      undefined=StrictUndefined, trim_blocks=False, keep_trailing_newline=True)
    env.filters["tex"] = tex_escape
    env.filters["md"] = md_escape
    return env


def format_value(col: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    if col in _DIGITS:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return str(value)
        return f"{v:+.{_DIGITS[col]}f}" if col == "delta" else f"{v:.{_DIGITS[col]}f}"
    if col in ("run_id", "n"):
        try:
            return str(int(value))
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def document(table: pd.DataFrame, *, layout: str = "long") -> dict[str, Any]:
    """Headers and rows of display text with best marks: what every template renders."""
    if layout == "matrix":
        mx = matrix(table)
        mask = matrix_best_mask(mx)
        headers = list(mx.columns)
        rows = [{"reported": str(rec["kind"]).startswith("reported"),
                 "cells": [{"text": "-" if v in ("", None) else str(v), "best": bool(mask.at[i, c])}
                           for c, v in rec.items()]}
                for i, rec in zip(mx.index, mx.to_dict("records"))]
        return {"headers": headers, "rows": rows}
    if layout != "long":
        raise ValueError(f"layout must be long or matrix, not {layout!r}")
    mask = best_mask(table)
    rows = [{"reported": rec["kind"] == "reported",
             "cells": [{"text": format_value(c, rec[c]), "best": bool(mask.at[i, c]) if c in BEST else False}
                       for c in DOC_COLUMNS]}
            for i, rec in zip(table.index, table.to_dict("records"))]
    return {"headers": [LABELS[c] for c in DOC_COLUMNS], "rows": rows}


def csv_frame(table: pd.DataFrame, *, layout: str = "long") -> pd.DataFrame:
    """Raw values for CSV; a ``best`` column names the columns marked best on each row."""
    if layout == "matrix":
        return matrix(table)
    if layout != "long":
        raise ValueError(f"layout must be long or matrix, not {layout!r}")
    mask = best_mask(table)
    out = table[COLUMNS].copy()
    out["best"] = [";".join(c for c in BEST if mask.at[i, c]) for i in table.index]
    return out


def render(table: pd.DataFrame, fmt: str, *, layout: str = "long", title: str = "Leaderboard",
           description: str = "") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "csv":
        return csv_frame(table, layout=layout).to_csv(index=False)
    doc = document(table, layout=layout)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _env(fmt).get_template(TEMPLATES[fmt]).render(
        title=title, description=description or "all runs", legend=LEGEND, generated=generated, **doc)


def write(text: str, out_path: str | os.PathLike | None) -> Path | None:
    """Write ``text`` to a file atomically (a temporary name beside it, then renamed), or to standard
    output when ``out_path`` is None or ``"-"`` (then returns None). An existing folder is refused."""
    from harness.run.reports import open_output, output_path

    out = output_path(out_path)
    with open_output(out) as f:
        f.write(text)
    return out


def describe(filters) -> str:
    """One line naming the filters, printed on every export so a table says what it shows."""
    parts = []
    for label, values in (("backbone", filters.backbones), ("method", filters.methods),
                          ("benchmark", filters.benchmarks), ("kind", filters.kinds)):
        if values:
            parts.append(f"{label}: {', '.join(values)}")
    if filters.since or filters.until:
        parts.append(f"runs started {filters.since or '…'} to {filters.until or '…'}")
    if filters.latest_only:
        parts.append("newest run per configuration")
    if not filters.include_reported:
        parts.append("no reported numbers")
    return "; ".join(parts) or "all finished runs and reported numbers"
