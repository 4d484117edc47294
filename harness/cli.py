"""`harness`: the command line. Imports stay inside the handlers so `--help` and `list` are instant."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from .api.types import DEFAULT_MAX_IMAGE_PIXELS  # stdlib only: keeps --help instant

EXIT_USAGE = 2

# Feature commands live with their feature; each module has ``add_commands(subparsers)`` and keeps
# its heavy imports inside the handlers (``harness --help`` must stay instant).
COMMAND_MODULES: list[str] = [
    "harness.data_commands",
    "harness.rescore_commands",
    "harness.leaderboard_commands",
    "harness.l2v_commands",
    "harness.train_commands",
]


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _key_values(pairs: list[str]) -> dict[str, str]:
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


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # Libraries' deprecation notices are for their developers, not for someone reading results.
    warnings.filterwarnings("ignore", category=FutureWarning)


def _new_output(path: str, what: str) -> Path:
    """An --out that must not silently replace a file or mix with a folder's contents."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {path} is an existing file; {what} go into a folder: pass a new or empty folder")
    return out


# -- commands ------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from .api import METHODS, coerce_options

    from .judge import judge_from_args
    from .runner import RunSpec, execute

    method_cls = METHODS.get(args.method)
    options = coerce_options(method_cls, {**_key_values(args.opt), **args.method_flags})
    if args.max_new_tokens is not None:
        options["max_new_tokens"] = args.max_new_tokens
    _quiet_libraries()
    spec = RunSpec(method=args.method, bench=args.bench, model=args.model, method_options=options, data=args.data,
                   split=args.split, limit=args.limit, seed=args.seed, batch_size=args.batch_size, device=args.device,
                   dtype=args.dtype, revision=args.revision, db=args.db, fresh=args.fresh,
                   progress=not args.no_progress,
                   max_image_pixels=args.max_image_pixels or None,
                   judge=judge_from_args(args.judge_url, args.judge_model, args.judge_key_env))
    report = execute(spec)
    m = report.metrics
    if args.json:
        print(json.dumps({"run_id": report.run_id, "db": report.db_url, "resumed": report.resumed,
                          "new_samples": report.n_new, "metrics": m, "official": report.official,
                          "judged": report.judged}, indent=2))
    else:
        acc = f"{m['accuracy']:.2f} ± {m['accuracy_se']:.2f}" if m.get("accuracy") is not None else "n/a"
        print(f"run {report.run_id} {'resumed' if report.resumed else 'finished'}: {args.method} on {args.bench}, "
              f"{m['n']} samples ({report.n_new} new, {m['n_errors']} errors), accuracy {acc} %, "
              f"mean generated tokens {m.get('mean_generated_tokens')}")
        for result in (report.official, report.judged):
            if result and (result.get("overall") or {}).get("accuracy") is not None:
                print(f"{result.get('scoring', 'official')} score ({result.get('scorer', args.bench)}): "
                      f"{result['overall']['accuracy']:.2f} %")
        print(f"results: {report.db_url}  (harness show {report.run_id})")
    return 0


def cmd_list(args) -> int:
    from .api import METHODS

    from .api import BENCHMARKS
    from .backbones import FAMILY_NAMES

    def section(title, entries):
        print(title)
        width = max(len(name) for name, _ in entries)
        for name, text in entries:
            print(f"  {name:<{width}}  {text}")

    section("methods:", [(n, cls.description) for n, cls in METHODS.items()])
    section("benchmarks:", [(n, cls.description) for n, cls in BENCHMARKS.items()])
    section("backbone families:", sorted(FAMILY_NAMES.items()))
    return 0


def _store(args, read_only=True):
    from .store import Store

    return Store(args.db, read_only=read_only)


def cmd_runs(args) -> int:
    from .reports import format_runs

    runs = _store(args).runs(method=args.method, benchmark=args.bench)
    print(json.dumps(runs, indent=2) if args.json else format_runs(runs))
    return 0


def cmd_show(args) -> int:
    from .reports import format_run

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
    from .reports import export

    if args.out == "-":
        args.out = None  # standard output
    fmt = args.format or _EXPORT_SUFFIXES.get(Path(args.out or "").suffix.lower(), "csv")
    what = args.what or ("leaderboard" if fmt in ("md", "latex", "html") else "runs")
    if what == "leaderboard":
        from .leaderboard_commands import export_leaderboard

        return export_leaderboard(args, fmt)
    if fmt not in ("csv", "jsonl"):
        raise UsageError(f"--format {fmt} is for the leaderboard table (--what leaderboard); "
                         f"{what} rows export as csv or jsonl")
    n = export(_store(args), args.out, fmt=fmt, what=what, run_ids=args.run or None)
    if args.out:
        print(f"wrote {n} {what} rows to {args.out}")
    return 0


def cmd_tiny_model(args) -> int:
    _quiet_libraries()
    from .tiny import write_tiny_model

    out = _new_output(args.out, "a model's files")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {args.out} is a folder that is not empty; pass a new or empty folder "
                         "(nothing was overwritten)")
    out = write_tiny_model(args.family, out, hidden_size=args.hidden_size, layers=args.layers,
                           heads=args.heads, kv_heads=args.kv_heads, seed=args.seed)
    print(out)
    return 0


def cmd_score(args) -> int:
    from .scoring.predictions import score_predictions

    judge = None
    if args.judge_url or args.judge_model:
        from .judge import judge_from_args

        judge = judge_from_args(args.judge_url, args.judge_model, args.judge_key_env)
        judge.check()
    result = score_predictions(args.bench, args.predictions, data=args.data, split=args.split, judge=judge)
    if args.json:
        print(json.dumps(result))
        return 0
    o = result["overall"]
    kind = result.get("scoring", "official") + (f" ({result['scorer']})" if result.get("scorer") else "")
    extra = "".join(f", {k} {o[k]:.2f}" for k in ("f1", "precision", "recall", "question_accuracy") if o.get(k) is not None)
    print(f"{args.bench} [{kind}] overall: {o['correct']}/{o['total']} = {o['accuracy']:.2f} %{extra}")
    if result.get("undecided"):
        print(f"  {result['undecided']} answer(s) the rule could not decide (scored wrong); {result.get('note', '')}")
    for name, b in result.get("by_category", {}).items():
        counts = f"{b['correct']}/{b['total']} = " if "correct" in b else ""
        print(f"  {name}: {counts}{b['accuracy']:.2f} %")
    return 0


def cmd_fixtures(args) -> int:
    from .fixtures import write_all

    _new_output(args.out, "the fixture files")
    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    for name, path in write_all(args.out, n=args.n, seed=args.seed).items():
        print(f"{name}: {path}")
    return 0


def cmd_demo(args) -> int:
    """Tiny model + bundled fixtures + SQLite: the whole pipeline on a laptop in about a minute."""
    _quiet_libraries()
    from .fixtures import write_all
    from .runner import RunSpec, execute
    from .tiny import write_tiny_model

    root = Path(args.out)
    model_dir = root / "tiny-qwen2-vl"
    if not (model_dir / "config.json").exists():
        write_tiny_model("qwen2-vl", model_dir)
    data = write_all(root / "data", n=args.n, seed=0)
    db = args.db or f"sqlite:///{root / 'harness.db'}"
    for method in args.methods.split(","):
        for bench in args.benches.split(","):
            report = execute(RunSpec(method=method, bench=bench, model=str(model_dir), data=str(data[bench]),
                                     batch_size=4, db=db, method_options={"max_new_tokens": 24}))
            m = report.metrics
            print(f"{method:>7} on {bench:<7} run {report.run_id}: accuracy {m['accuracy']:.1f} ± "
                  f"{m['accuracy_se']:.1f} %, mean generated tokens {m['mean_generated_tokens']}, "
                  f"{m['samples_per_second']} samples/s")
    from .reports import format_runs
    from .store import Store

    print("\n" + format_runs(Store(db, read_only=True).runs()))
    print(f"\nThe model is random, so accuracy is chance level: the point is the pipeline.\n"
          f"results: {db}\n  harness runs --db {db}\n  harness show RUN_ID --db {db}\n"
          f"  harness export --db {db} --what samples --out samples.csv\n"
          f"  harness leaderboard --db {db}   (browse them at http://127.0.0.1:7860)")
    return 0


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .judge import add_judge_arguments  # stdlib only: keeps --help instant

    parser = argparse.ArgumentParser(
        prog="harness", description="Evaluate latent and multimodal chain-of-thought methods on VLM benchmarks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def db_arg(p):
        p.add_argument("--db", help="SQLAlchemy URL (default: $HARNESS_DB or sqlite:///results/harness.db)")

    p = sub.add_parser("run", help="run a method on a benchmark and store the results")
    p.add_argument("--method", required=True, help="a registered method (harness list)")
    p.add_argument("--bench", required=True, help="a registered benchmark (harness list)")
    p.add_argument("--model", required=True, help="hub id or local checkpoint folder")
    p.add_argument("--data", help="benchmark data (folder or file); see `harness list`")
    p.add_argument("--split", help="data split (default: the benchmark's evaluation split)")
    p.add_argument("--limit", type=int, help="a deterministic (seeded) subset of N samples")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, help="shortcut for --opt max_new_tokens=N")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option (repeatable); any method option may also be given as --name VALUE, "
                        "e.g. --checkpoint DIR or --alpha 4 (see `harness list`)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), bfloat16, float16, float32")
    p.add_argument("--revision", help="hub revision of the model")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming the same run")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help=f"an image with more pixels is an error sample, never decoded (default {DEFAULT_MAX_IMAGE_PIXELS:,}"
                        "; 0: no limit)")
    add_judge_arguments(p, "also score with an LLM judge behind this OpenAI-compatible API base, e.g. "
                           "http://127.0.0.1:8000/v1 (MathVista, MathVerse); stored as a separate 'judge' score")
    db_arg(p)
    p.set_defaults(handler=cmd_run, accepts_method_flags=True)

    p = sub.add_parser("list", help="methods, benchmarks and backbone families")
    p.set_defaults(handler=cmd_list)

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
    from .leaderboard_commands import add_table_filters

    add_table_filters(p)
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("tiny-model", help="write a tiny random checkpoint (tests, demos; no network)")
    p.add_argument("--family", required=True, choices=["qwen2-vl", "llava", "qwen2"])
    p.add_argument("--out", required=True)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_tiny_model)

    p = sub.add_parser("score", help="score a prediction file with a benchmark's official rule")
    p.add_argument("bench")
    p.add_argument("--predictions", required=True,
                   help="VLMEvalKit's prediction format (the benchmark's TSV columns plus `prediction`; .xlsx, .tsv, "
                        ".csv, .json) for the VLMEvalKit benchmarks; M3CoT's jsonl format (id, answer, choices, "
                        "domain, topic, messages) for m3cot")
    p.add_argument("--data", help="the benchmark's data the predictions were made on (default: $LMUData/NAME.tsv)")
    p.add_argument("--split", help="the benchmark's split / VLMEvalKit variant (default: its evaluation split)")
    add_judge_arguments(p, "MathVista/MathVerse: an OpenAI-compatible API base for VLMEvalKit's LLM judge "
                           "(without one they are scored by a labelled rule)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_score)

    p = sub.add_parser("fixtures", help="write the fixture subsets (official formats, generated images)")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_fixtures)

    p = sub.add_parser("demo", help="tiny model + fixtures + SQLite: run the baselines end to end")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--methods", default="direct,cot,mm-cot")
    p.add_argument("--benches", default="m3cot,mmstar")
    p.add_argument("--n", type=int, default=24)
    db_arg(p)
    p.set_defaults(handler=cmd_demo)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(sub)
    return parser


def _on_sigterm(signum, frame):
    from .runner import Terminated

    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_method_flags", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.captureWarnings(True)  # warnings go through logging: one line each, clear of progress bars
    from .api import DataError, UnknownName

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)  # `timeout`, Slurm, Docker: like Ctrl-C

    try:
        args.method_flags = method_flags(extra)
        return args.handler(args)
    except (UsageError, UnknownName, DataError, ValueError, FileNotFoundError, PermissionError, KeyError) as exc:
        if args.verbose:
            raise
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"harness: error: {message.splitlines()[0] if message else type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        from .runner import Terminated

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
