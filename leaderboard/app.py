"""The leaderboard: a read-only Gradio app over the results database.

Tabs: Leaderboard (the main table, filters, exports), Plots (accuracy against generated tokens and
against latency), Run (configuration, environment, per-category breakdown, a sample browser),
Compare (two runs: flips and paired tests), Reported (the papers' numbers and how names map).
Every read goes through :class:`leaderboard.queries.LeaderboardDB` (read-only, parameterised); no
control takes SQL, and nothing here writes to the database. Exports are written to a temporary
folder for download, never beside the database; that folder and Gradio's own cache live in one
temporary folder of this process, removed when it exits.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
# This process's temporary folder: export files and (unless GRADIO_TEMP_DIR is set) Gradio's cache,
# which otherwise stays behind as /tmp/gradio. Gradio reads the variable when it is imported.
TEMP_ROOT = Path(tempfile.mkdtemp(prefix="harness-leaderboard-"))
atexit.register(shutil.rmtree, TEMP_ROOT, ignore_errors=True)
if not os.environ.get("GRADIO_TEMP_DIR") and "gradio" not in sys.modules:
    os.environ["GRADIO_TEMP_DIR"] = str(TEMP_ROOT / "gradio")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from .compare import compare_runs, describe as describe_comparison  # noqa: E402
from .exports import LEGEND, describe, format_value, render, write  # noqa: E402
from .names import BENCHMARK_NAMES, METHOD_NAMES  # noqa: E402
from .queries import (BEST, COLUMNS, KINDS, LABELS, Filters, LeaderboardDB, best_mask,  # noqa: E402
                      matrix, matrix_best_mask)

ALL = "(all)"
PAGE_SIZE = 50
# Shown in the app; the model path and scorer are in the CSV export and on the run page.
APP_COLUMNS = [c for c in COLUMNS if c not in ("model",)]
BEST_STYLE = "font-weight: 700; background-color: #d3f9d8"
REPORTED_STYLE = "font-style: italic; background-color: #fff9db"
EXPORT_SUFFIX = {"csv": "csv", "md": "md", "latex": "tex", "html": "html"}


class ImageSource:
    """A sample's images, read from benchmark data the user pointed at (``--data BENCH=PATH``), and
    only when that data's fingerprint is the one the run recorded: never an image from other data."""

    def __init__(self, data: dict[str, str]):
        self.data = data
        self._benchmarks: dict[tuple[str, str | None], Any] = {}

    def images(self, run: dict[str, Any], position: int) -> tuple[list, str]:
        bench = run["benchmark"]
        path = self.data.get(bench)
        if not path:
            return [], f"no images: start the app with `--data {bench}=PATH` to show them"
        from harness.api import BENCHMARKS

        key = (bench, run.get("split"))
        try:
            if key not in self._benchmarks:
                self._benchmarks[key] = BENCHMARKS.get(bench)(path, run.get("split"))
            benchmark = self._benchmarks[key]
            fingerprint = benchmark.fingerprint()
            if run.get("data_fingerprint") and fingerprint != run["data_fingerprint"]:
                return [], (f"no images: the data at {path} (fingerprint {fingerprint}) is not the data this "
                            f"run scored ({run['data_fingerprint']})")
            return benchmark.sample(int(position)).images(), ""
        except Exception as exc:  # bad data must not take the page down; say what happened
            return [], f"no images: {type(exc).__name__}: {exc}"


def parse_data_args(pairs: list[str] | dict[str, str] | None) -> dict[str, str]:
    if isinstance(pairs, dict):
        return dict(pairs)
    out = {}
    for pair in pairs or []:
        bench, sep, path = pair.partition("=")
        if not sep or not bench or not path:
            raise ValueError(f"--data expects BENCH=PATH (e.g. m3cot=data/m3cot), got {pair!r}")
        out[bench.strip()] = path.strip()
    return out


# -- pure functions behind the controls (tested without a browser) ------------------------------------
def filters_from(backbone, methods, benchmarks, kinds, since, until, latest, reported) -> Filters:
    return Filters.make(backbones=() if backbone in (None, "", ALL) else (backbone,), methods=methods,
                        benchmarks=benchmarks, kinds=kinds, since=since, until=until, latest_only=latest,
                        include_reported=reported)


def styled_table(table: pd.DataFrame, layout: str = "long"):
    """The table for display: numbers stay numbers (sortable), best cells and reported rows styled."""
    if layout == "matrix":
        mx = matrix(table)
        mask = matrix_best_mask(mx)
        styles = pd.DataFrame("", index=mx.index, columns=mx.columns)
        styles[mask] = BEST_STYLE
        for i in mx.index[mx["kind"].astype(str).str.startswith("reported")]:
            styles.loc[i, :] = REPORTED_STYLE
        return mx.style.apply(lambda _: styles, axis=None)
    view = table[APP_COLUMNS].copy()
    mask = best_mask(table)
    styles = pd.DataFrame("", index=view.index, columns=view.columns)
    for col in BEST:
        styles.loc[mask[col], col] = BEST_STYLE
    for i in view.index[view["kind"] == "reported"]:
        styles.loc[i, :] = REPORTED_STYLE
    view = view.rename(columns=LABELS)
    styles.columns = view.columns
    formats = {LABELS[c]: (lambda v, c=c: format_value(c, v)) for c in APP_COLUMNS}
    return view.style.apply(lambda _: styles, axis=None).format(formats)


def table_summary(table: pd.DataFrame, filters: Filters) -> str:
    measured = int((table["kind"] != "reported").sum()) if len(table) else 0
    runs = table.loc[table["kind"] != "reported", "run_id"].nunique() if len(table) else 0
    return (f"**{measured} measured rows** ({runs} runs) and **{len(table) - measured} reported rows** · "
            f"{describe(filters)}  \n<small>{LEGEND}</small>")


def plot_points(table: pd.DataFrame, kind: str, tokens: str, with_reported: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Points for the two plots: one per run (of the chosen scoring kind), coloured by method."""
    measured = table[(table["kind"] == kind) & table["accuracy"].notna()] if len(table) else table
    col = "tokens_correct" if tokens == "correct" else "tokens"
    pts = pd.DataFrame({"run": measured["run_id"], "method": measured["method"], "backbone": measured["backbone"],
                        "benchmark": measured["benchmark"], "accuracy": measured["accuracy"].astype(float),
                        "tokens": pd.to_numeric(measured[col], errors="coerce"),
                        "latency_s": pd.to_numeric(measured["latency_s"], errors="coerce")})
    tok = pts.dropna(subset=["tokens"])
    if with_reported and tokens == "correct" and len(table):
        rep = table[table["reported"].notna() & table["reported_tokens_correct"].notna()]
        rep = rep.drop_duplicates(["method", "backbone", "benchmark", "source"])
        tok = pd.concat([tok, pd.DataFrame({
            "run": None, "method": rep["method"] + " (reported)", "backbone": rep["backbone"],
            "benchmark": rep["benchmark"], "accuracy": rep["reported"].astype(float),
            "tokens": rep["reported_tokens_correct"].astype(float), "latency_s": None})], ignore_index=True)
    return tok.reset_index(drop=True), pts.dropna(subset=["latency_s"]).reset_index(drop=True)


def plot_caption(table: pd.DataFrame, kind: str, tokens: str) -> str:
    """Says which runs a plot leaves out and why, so an empty plot is never a mystery."""
    runs = table[(table["kind"] == kind) & table["accuracy"].notna()] if len(table) else table
    col = "tokens_correct" if tokens == "correct" else "tokens"
    missing = int(pd.to_numeric(runs[col], errors="coerce").isna().sum()) if len(runs) else 0
    text = f"{len(runs)} runs scored *{kind}* under the current filters."
    if missing:
        why = "no correct answer, so no tokens on correct answers" if tokens == "correct" else "no token counts"
        text += f" {missing} of them have {why} and are not in the tokens plot."
    return text


def run_choices(db: LeaderboardDB) -> list[tuple[str, int]]:
    """The run pickers' choices, read now (a run finished after the app started is there too)."""
    return [(f"{r.id} · {r.method} · {r.backbone} · {r.benchmark} · {r.status}", int(r.id))
            for r in db.runs_list().itertuples()]


def run_id_of(value) -> int | None:
    """A run picker's value as a run id: a choice's id, or what was typed ("12", "#12", "12 · cot ...")."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    m = re.match(r"\s*#?(\d+)", str(value))
    if not m:
        raise gr.Error(f"{value!r} is not a run id")
    return int(m.group(1))


def run_picker_updates(db: LeaderboardDB, *current) -> list[dict]:
    """Fresh choices for the run pickers (Run; Compare A and B), keeping what each shows; an empty
    picker gets its default (the newest run; Compare A: the one before)."""
    runs = run_choices(db)
    defaults = [runs[0][1] if runs else None, runs[1][1] if len(runs) > 1 else None,
                runs[0][1] if runs else None]
    return [gr.update(choices=runs, value=value if value not in (None, "") else default)
            for value, default in zip(current, defaults)]


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


CONFIG_KEYS = ["id", "status", "key", "method", "method_config", "model", "model_revision", "backbone_family",
               "benchmark", "split", "subset", "data_fingerprint", "n_planned", "seed", "batch_size", "dtype"]
ENV_KEYS = ["harness_version", "git_commit", "device", "library_versions", "started_at", "updated_at",
            "finished_at", "peak_memory_mb", "error"]


def run_page(db: LeaderboardDB, run_id) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame, list[str], str]:
    """Configuration, environment, metrics and scores, per-category breakdown, category choices."""
    run = db.run(int(run_id))
    metrics = {k: v for k, v in (run.get("metrics") or {}).items() if k != "by_category"}
    scores = pd.DataFrame([{"kind": s["kind"], "scorer": s["scorer"], "accuracy": s["accuracy"],
                            "scored at": str(s["created_at"])[:16]} for s in run["scores"]],
                          columns=["kind", "scorer", "accuracy", "scored at"])
    cats = db.categories(run)
    headline = (f"### Run {run['id']}: {run['method']} on {run['benchmark']} · {run['model']} · {run['status']}\n"
                + ", ".join(f"{k}: {v}" for k, v in metrics.items()
                            if k in ("n", "accuracy", "accuracy_se", "mean_generated_tokens",
                                     "mean_generated_tokens_correct", "mean_latent_steps", "samples_per_second")))
    return (_jsonable({k: run.get(k) for k in CONFIG_KEYS}), _jsonable({k: run.get(k) for k in ENV_KEYS}),
            scores, cats, [c for c in cats["category"]], headline)


def sample_page(db: LeaderboardDB, run_id, wrong_only: bool, errors_only: bool, category, page) -> tuple[pd.DataFrame, str]:
    page = max(int(page or 1), 1)
    df, total = db.samples(int(run_id), wrong_only=wrong_only, errors_only=errors_only,
                           category=None if category in (None, "", ALL) else ("" if category == "-" else category),
                           offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    view = df[["position", "uid", "category", "extracted", "gold", "correct", "error", "generated_tokens",
               "latent_steps", "latency_s", "prompt", "prediction"]].copy()
    view["latency_s"] = view["latency_s"].round(4)
    return view, f"{total} samples match · page {page} of {pages} · select a row to see it in full"


# -- the app ----------------------------------------------------------------------------------------
def build_app(db: LeaderboardDB, data: dict[str, str] | None = None) -> gr.Blocks:
    images = ImageSource(parse_data_args(data))
    choices = db.choices()
    TEMP_ROOT.mkdir(parents=True, exist_ok=True)
    export_dir = Path(tempfile.mkdtemp(prefix="exports-", dir=TEMP_ROOT))

    with gr.Blocks(title="latent-cot-harness leaderboard", analytics_enabled=False, fill_width=True) as app:
        gr.Markdown(f"# Leaderboard\nResults in `{db.url}` (read-only). Measured numbers are this harness's "
                    "runs; *reported* numbers are copied from papers and marked as such.")
        with gr.Tabs():
            # -- Leaderboard ------------------------------------------------------------------------
            with gr.Tab("Leaderboard"):
                with gr.Row():
                    backbone = gr.Dropdown([ALL] + choices["backbones"], value=ALL, label="backbone",
                                           elem_id="filter-backbone")
                    kinds = gr.CheckboxGroup(list(KINDS), value=[], label="scoring kind (none ticked: all)",
                                             elem_id="filter-kind")
                    since = gr.Textbox(label="runs since (YYYY-MM-DD)", elem_id="filter-since")
                    until = gr.Textbox(label="runs until (YYYY-MM-DD)", elem_id="filter-until")
                with gr.Row():
                    methods = gr.CheckboxGroup(choices["methods"], value=[], label="method (none ticked: all)",
                                               elem_id="filter-method")
                    benchmarks = gr.CheckboxGroup(choices["benchmarks"], value=[],
                                                  label="benchmark (none ticked: all)", elem_id="filter-benchmark")
                with gr.Row():
                    latest = gr.Checkbox(False, label="newest run per configuration only")
                    with_reported = gr.Checkbox(True, label="papers' reported numbers", elem_id="filter-reported")
                    layout = gr.Radio(["long", "matrix"], value="long", label="layout",
                                      info="long: a row per run and scoring; matrix: methods × benchmarks")
                summary = gr.Markdown(elem_id="table-summary")
                table = gr.Dataframe(interactive=False, wrap=False, max_height=640, elem_id="main-table",
                                     show_search="search", buttons=["fullscreen", "copy"])
                with gr.Row():
                    export_fmt = gr.Radio(["csv", "md", "latex", "html"], value="html", label="export the table as")
                    export_btn = gr.Button("Export")
                    export_file = gr.File(label="download", interactive=False)

            # -- Plots --------------------------------------------------------------------------------
            with gr.Tab("Plots"):
                gr.Markdown("One point per run (of the chosen scoring kind), coloured by method; the points "
                            "follow the Leaderboard tab's filters.")
                with gr.Row():
                    plot_kind = gr.Radio(["official", "judge", "rule-based", "reference"], value="official", label="scoring kind")
                    plot_tokens = gr.Radio([("on correct answers (LaRe's # Tokens)", "correct"),
                                            ("all answers", "all")], value="correct", label="generated tokens")
                    plot_reported = gr.Checkbox(False, label="add reported points (accuracy, tokens on correct)")
                plot_note = gr.Markdown()
                tokens_plot = gr.ScatterPlot(x="tokens", y="accuracy", color="method",
                                             tooltip=["run", "method", "backbone", "benchmark", "accuracy", "tokens"],
                                             title="accuracy vs generated tokens", x_title="mean generated tokens",
                                             y_title="accuracy %", height=380)
                latency_plot = gr.ScatterPlot(x="latency_s", y="accuracy", color="method",
                                              tooltip=["run", "method", "backbone", "benchmark", "accuracy",
                                                       "latency_s"],
                                              title="accuracy vs latency", x_title="mean latency per sample (s)",
                                              y_title="accuracy %", height=380)

            # -- Run ----------------------------------------------------------------------------------
            with gr.Tab("Run") as run_tab:
                runs = run_choices(db)
                with gr.Row():
                    # Any stored run id is accepted (typed, or a run newer than these choices); the
                    # choices are read again on page load, on opening this tab and with the button.
                    run_pick = gr.Dropdown(runs, value=runs[0][1] if runs else None, label="run",
                                           elem_id="run-pick", allow_custom_value=True, scale=8)
                    refresh_runs = gr.Button("refresh runs", elem_id="refresh-runs", scale=1)
                run_head = gr.Markdown()
                with gr.Row():
                    run_config = gr.JSON(label="configuration")
                    run_env = gr.JSON(label="environment")
                with gr.Row():
                    run_scores = gr.Dataframe(label="scorings", interactive=False)
                    run_cats = gr.Dataframe(label="per category", interactive=False)
                with gr.Row():
                    wrong_only = gr.Checkbox(False, label="wrong only")
                    errors_only = gr.Checkbox(False, label="errors only")
                    category = gr.Dropdown([ALL], value=ALL, label="category")
                    page = gr.Number(1, label="page", precision=0, minimum=1)
                sample_info = gr.Markdown()
                sample_table = gr.Dataframe(interactive=False, max_height=420, wrap=False, max_chars=60,
                                            elem_id="sample-table")
                with gr.Row():
                    sample_images = gr.Gallery(label="image", height=260, columns=2, object_fit="contain",
                                               elem_id="sample-images")
                    sample_detail = gr.JSON(label="sample", elem_id="sample-detail")

            # -- Compare ------------------------------------------------------------------------------
            with gr.Tab("Compare") as compare_tab:
                with gr.Row():
                    run_a = gr.Dropdown(runs, value=runs[1][1] if len(runs) > 1 else None, label="run A",
                                        allow_custom_value=True)
                    run_b = gr.Dropdown(runs, value=runs[0][1] if runs else None, label="run B",
                                        allow_custom_value=True)
                    compare_btn = gr.Button("Compare")
                compare_md = gr.Markdown()
                flips = gr.Dataframe(label="flips (shared samples whose correctness changed)", interactive=False)

            # -- Reported -----------------------------------------------------------------------------
            with gr.Tab("Reported"):
                gr.Markdown(
                    "Numbers copied from papers (`harness import-paper-results FILE.csv`). A reported number is "
                    "put beside a measured one only when method, backbone (last path component of the model id, "
                    "case-insensitive) and benchmark all match; `our_method` / `our_benchmark` show the mapping, "
                    "empty where we have no such method or benchmark.\n\n"
                    "methods: " + "; ".join(f"`{k}` = {' / '.join(v)}" for k, v in METHOD_NAMES.items()) +
                    "  \nbenchmarks: " + "; ".join(f"`{k}` = {v}" for k, v in BENCHMARK_NAMES.items()))
                reported_table = gr.Dataframe(interactive=False, max_height=640, show_search="filter")

        # -- events ---------------------------------------------------------------------------------
        filter_inputs = [backbone, methods, benchmarks, kinds, since, until, latest, with_reported]

        def update_table(*values):
            *flt, lay = values
            try:
                filters = filters_from(*flt)
            except ValueError as exc:
                raise gr.Error(str(exc))
            t = db.table(filters)
            return styled_table(t, lay), table_summary(t, filters)

        def update_plots(*values):
            *flt, kind, tokens, rep = values
            try:
                t = db.table(filters_from(*flt))
            except ValueError as exc:
                raise gr.Error(str(exc))
            return (*plot_points(t, kind, tokens, rep), plot_caption(t, kind, tokens))

        def do_export(*values):
            *flt, lay, fmt = values
            try:
                filters = filters_from(*flt)
            except ValueError as exc:
                raise gr.Error(str(exc))
            text = render(db.table(filters), fmt, layout=lay, description=describe(filters))
            return str(write(text, export_dir / f"leaderboard.{EXPORT_SUFFIX[fmt]}"))

        for control in filter_inputs + [layout]:
            control.change(update_table, filter_inputs + [layout], [table, summary])
        plot_inputs = filter_inputs + [plot_kind, plot_tokens, plot_reported]
        for control in plot_inputs:
            control.change(update_plots, plot_inputs, [tokens_plot, latency_plot, plot_note])
        export_btn.click(do_export, filter_inputs + [layout, export_fmt], export_file)

        def existing_run(value) -> int | None:
            run_id = run_id_of(value)
            if run_id is not None:
                try:
                    db.run(run_id)
                except KeyError:
                    raise gr.Error(f"no run {run_id} in the database (`harness runs` lists them)")
            return run_id

        def show_run(value):
            run_id = existing_run(value)
            if run_id is None:
                return {}, {}, None, None, gr.update(choices=[ALL], value=ALL), "no runs yet"
            config, env, scores, cats, cat_choices, head = run_page(db, run_id)
            return config, env, scores, cats, gr.update(choices=[ALL] + cat_choices, value=ALL), head

        def show_samples(value, wrong, errors, cat, pg):
            run_id = existing_run(value)
            if run_id is None:
                return None, ""
            return sample_page(db, run_id, wrong, errors, cat, pg)

        def show_sample(value, wrong, errors, cat, pg, evt: gr.SelectData):
            run_id = existing_run(value)
            if run_id is None:
                return [], {}
            view, _ = sample_page(db, run_id, wrong, errors, cat, pg)
            if evt is None or evt.index is None or evt.index[0] >= len(view):
                return [], {}
            row = view.iloc[evt.index[0]].to_dict()
            imgs, note = images.images(db.run(int(run_id)), int(row["position"]))
            detail = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
            if note:
                detail["image"] = note
            return imgs, _jsonable(detail)

        run_pick.change(show_run, run_pick, [run_config, run_env, run_scores, run_cats, category, run_head])
        sample_inputs = [run_pick, wrong_only, errors_only, category, page]
        for control in sample_inputs:
            control.change(show_samples, sample_inputs, [sample_table, sample_info])
        sample_table.select(show_sample, sample_inputs, [sample_images, sample_detail])

        def do_compare(a, b):
            a, b = existing_run(a), existing_run(b)
            if a is None or b is None:
                raise gr.Error("choose two runs")
            result = compare_runs(db, a, b)
            return describe_comparison(result["summary"]), result["flips"]

        compare_btn.click(do_compare, [run_a, run_b], [compare_md, flips])

        def refresh_pickers(*current):
            return run_picker_updates(db, *current)

        pickers = [run_pick, run_a, run_b]
        refresh_runs.click(refresh_pickers, pickers, pickers)
        run_tab.select(refresh_pickers, pickers, pickers)
        compare_tab.select(refresh_pickers, pickers, pickers)

        def refresh_filters():
            c = db.choices()
            return (gr.update(choices=[ALL] + c["backbones"]), gr.update(choices=c["methods"]),
                    gr.update(choices=c["benchmarks"]))

        app.load(refresh_pickers, pickers, pickers)
        app.load(refresh_filters, None, [backbone, methods, benchmarks])

        def on_load(*values):
            *flt, lay, kind, tokens, rep, run_id = values
            t = db.table(filters_from(*flt))
            tok, lat = plot_points(t, kind, tokens, rep)
            try:
                run_out = show_run(run_id)
                samples_out = show_samples(run_id, False, False, ALL, 1)
            except gr.Error:  # the run shown at startup is gone (another database file in its place)
                run_out = show_run(None)
                samples_out = show_samples(None, False, False, ALL, 1)
            return (styled_table(t, lay), table_summary(t, filters_from(*flt)), tok, lat,
                    plot_caption(t, kind, tokens), *run_out, *samples_out, db.reported())

        app.load(on_load, filter_inputs + [layout, plot_kind, plot_tokens, plot_reported, run_pick],
                 [table, summary, tokens_plot, latency_plot, plot_note, run_config, run_env, run_scores, run_cats, category,
                  run_head, sample_table, sample_info, reported_table])
    app.export_dir = export_dir
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve on ``host`` (127.0.0.1 unless told), no share link, no analytics, no MCP or SSR node server.

    Gradio's own banner (and its share-link hint) is not printed. ``block``: serve until Ctrl-C or
    SIGTERM, then close; otherwise return Gradio's (app, local_url, share_url) once it answers.
    A port taken meanwhile is a one-line ValueError (``PortInUse``), not Gradio's traceback.
    """
    import logging

    from .ports import PortInUse

    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's requests to itself, one INFO line each
    try:
        result = app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True,
                            show_error=True, quiet=True, ssr_mode=False, mcp_server=False,
                            footer_links=[], inbrowser=False)
    except OSError as exc:
        if "Cannot find empty port" in str(exc) or "in use" in str(exc).lower():
            raise PortInUse(f"port {port} on {host} is already in use; pass another --port") from None
        raise
    if not block:
        return result
    print(f"leaderboard: {app.local_url}  (read-only; Ctrl-C stops it)", flush=True)
    if threading.current_thread() is threading.main_thread():
        # Started as a background job of a script, the process inherits SIGINT ignored (bash does that
        # without job control) and Python then installs no Ctrl-C handler: the server would never stop
        # on SIGINT. It says Ctrl-C stops it, so it installs the handler itself.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while app.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("leaderboard stopped", flush=True)
    finally:
        app.close(verbose=False)
    return result


def serve(url: str | None = None, *, host: str = "127.0.0.1", port: int = 7860,
          data: list[str] | dict[str, str] | None = None) -> None:
    db = LeaderboardDB(url)
    app = build_app(db, parse_data_args(data))
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this address can read the results")
    try:
        launch(app, host=host, port=port, block=True)
    finally:
        db.close()
        shutil.rmtree(TEMP_ROOT, ignore_errors=True)
