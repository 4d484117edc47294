"""`harness l2v extract|sweep|analyze|textside`: the L2V-CoT commands (methods/l2v_cot/README.md).

Heavy imports stay inside the handlers so `harness --help` stays instant.
"""
from __future__ import annotations

import json

from harness.commands._common import db_arg, key_values, quiet_libraries


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} takes comma-separated integers, got {text!r}") from None


def _float_list(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} takes comma-separated numbers, got {text!r}") from None


def _pct(accuracy, se) -> str:
    return "n/a" if accuracy is None else f"{accuracy:.2f} ± {se:.2f} %"


def cmd_extract(args) -> int:

    quiet_libraries()
    from methods.l2v_cot.extract import DEFAULT_PAIRS, extract

    path, meta = extract(args.llm, args.pairs or DEFAULT_PAIRS, _int_list(args.layers, "--layers"), args.out, n=args.n,
                         contrast=args.contrast, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                         revision=args.revision, extract_at=args.extract_at, vlm=args.vlm)
    print(f"wrote {path}: layers {','.join(map(str, meta['layers']))} of {meta['num_layers']}, width "
          f"{meta['hidden_size']}, {meta['n']} pairs ({meta['contrast']}), data sha256 {meta['data_sha256'][:12]}")
    return 0


def cmd_sweep(args) -> int:
    quiet_libraries()
    from harness.api import METHODS, coerce_options

    from harness.run.runner import RunSpec, execute_plan, plan

    alphas = _float_list(args.alphas, "--alphas")
    layers = [x.strip() for x in args.layers.split(",") if x.strip()]
    cutoffs = _int_list(args.cutoffs, "--cutoffs")
    if not (alphas and layers and cutoffs):
        raise ValueError("--alphas, --layers and --cutoffs each need at least one value")
    extra = coerce_options(METHODS.get("l2v-cot"), {**key_values(args.opt), **args.method_flags})
    grid = [(a, layer, k) for k in cutoffs for layer in layers for a in alphas]
    plans = []
    for alpha, layer, cutoff in grid:  # every point planned first: a bad value fails before any model loads
        options = {**extra, "vector": args.vector, "alpha": alpha, "layer": layer, "cutoff": cutoff,
                   "resample": args.resample}
        plans.append(plan(RunSpec(method="l2v-cot", bench=args.bench, model=args.model, method_options=options,
                                  data=args.data, split=args.split, limit=args.limit, seed=args.seed,
                                  batch_size=args.batch_size, device=args.device, dtype=args.dtype, db=args.db,
                                  progress=not args.no_progress)))
    rows = []
    for i, ((alpha, layer, cutoff), point) in enumerate(zip(grid, plans), 1):
        report = execute_plan(point)  # each point is its own run; a finished one is resumed with nothing to compute
        m = report.metrics
        rows.append({"alpha": alpha, "layer": layer, "cutoff": cutoff, "run_id": report.run_id,
                     "accuracy": m.get("accuracy"), "accuracy_se": m.get("accuracy_se"),
                     "new_samples": report.n_new, "mean_generated_tokens": m.get("mean_generated_tokens")})
        print(f"[{i}/{len(grid)}] alpha {alpha} layer {layer} cutoff {cutoff}: run {report.run_id}, accuracy "
              f"{_pct(m.get('accuracy'), m.get('accuracy_se'))} ({report.n_new} new samples)")
    best = max(rows, key=lambda r: (r["accuracy"] if r["accuracy"] is not None else -1))
    if args.json:
        print(json.dumps({"grid": rows, "best": best}, indent=2))
    else:
        print(f"\n{'alpha':>6} {'layer':>6} {'cutoff':>7} {'run':>5} {'accuracy':>16} {'gen tokens':>11}")
        for r in rows:
            print(f"{r['alpha']:>6g} {r['layer']:>6} {r['cutoff']:>7} {r['run_id']:>5} "
                  f"{_pct(r['accuracy'], r['accuracy_se']):>16} {r['mean_generated_tokens']!s:>11}")
        print(f"best on {args.bench}: alpha {best['alpha']:g}, layer {best['layer']}, cutoff {best['cutoff']} "
              f"(run {best['run_id']}, {_pct(best['accuracy'], best['accuracy_se'])}); selected on the evaluated "
              "data itself, so an optimistic figure")
    return 0


def cmd_analyze(args) -> int:

    quiet_libraries()
    from methods.l2v_cot.analyze import analyze, format_result, metric_rows
    from methods.l2v_cot.extract import DEFAULT_PAIRS

    from harness.run.store import Store

    result = analyze(args.llm, args.vlm, args.pairs or DEFAULT_PAIRS, llm_layer=args.llm_layer,
                     vlm_layer=args.vlm_layer,
                     cutoff=args.cutoff, n=args.n, contrast=args.contrast, batch_size=args.batch_size,
                     device=args.device, dtype=args.dtype)
    ids = Store(args.db).add_text_metrics(metric_rows(result))
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    if not args.json:
        print(f"stored {len(ids)} rows (task lat-analysis) in the text-side metrics table")
    return 0


def cmd_textside(args) -> int:
    import os

    from harness.run.store import Store, check_url

    check_url(args.db)  # a bad --db fails before minutes of scoring
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the local tasks never download
    quiet_libraries()
    from methods.l2v_cot.textside import run_textside

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rows = run_textside(args.model, tasks, vector=args.vector, alpha=args.alpha, layer=args.layer,
                        source_layer=args.source_layer, cutoff=args.cutoff, resample=args.resample,
                        steer=args.steer, limit=args.limit, batch_size=args.batch_size,
                        max_gen_toks=args.max_gen_toks, device=args.device, dtype=args.dtype)
    Store(args.db).add_text_metrics(rows)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"\n{'task':<16} {'metric':<28} {'unsteered':>10} {'steered':>10} {'n':>5}")
    keys = sorted({(r["task"], r["metric"]) for r in rows})
    for task, metric in keys:
        plain = [r for r in rows if (r["task"], r["metric"]) == (task, metric) and not r["steered"]]
        steered = [r for r in rows if (r["task"], r["metric"]) == (task, metric) and r["steered"]]
        fmt = lambda rs: f"{rs[0]['value']:.4f}" if rs else "-"  # noqa: E731
        print(f"{task:<16} {metric:<28} {fmt(plain):>10} {fmt(steered):>10} {(plain or steered)[0]['n']:>5}")
    print("stored in the text-side metrics table" + (f", linked to {args.vector}" if args.vector else ""))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("l2v", help="L2V-CoT: extract, sweep, LAT analysis, text side (methods/l2v_cot)")
    l2v = p.add_subparsers(dest="l2v_command", required=True, metavar="L2V_COMMAND")

    def device_args(q):
        q.add_argument("--device", default="auto")
        q.add_argument("--dtype", default="auto")

    q = l2v.add_parser("extract", help="CoT directions of a source LLM from contrast pairs → safetensors")
    q.add_argument("--llm", required=True, help="hub id or local folder of a causal LM")
    q.add_argument("--pairs", help="jsonl contrast pairs (STILL-2 layout, or question-only for --contrast prompt); "
                                  "default: the repository's small set, methods/l2v_cot/data/contrast_pairs.jsonl")
    q.add_argument("--layers", required=True, help="decoder layer indices, comma-separated (negative from the end)")
    q.add_argument("--out", required=True, help="output .safetensors file")
    q.add_argument("--n", type=int, default=100, help="pairs to use (the paper: 100)")
    q.add_argument("--contrast", choices=["still2", "prompt"], default="still2")
    q.add_argument("--extract-at", choices=["turn-end", "answer-end"], default="turn-end",
                   help="where a still2 text is read: the end-of-turn token after the answer (the reference's) "
                        "or the answer's last token")
    q.add_argument("--vlm", action="store_true",
                   help="--llm is a VLM (hub id, folder or zoo:NAME): its own text side is the source, text only")
    q.add_argument("--batch-size", type=int, default=4)
    q.add_argument("--revision")
    device_args(q)
    q.set_defaults(handler=cmd_extract)

    q = l2v.add_parser("sweep", help="alpha x layer (x cutoff) grid, each point its own stored run",
                       description="Extra --name VALUE flags are l2v-cot options (e.g. --steer all).")
    q.add_argument("--bench", required=True)
    q.add_argument("--model", required=True, help="the VLM")
    q.add_argument("--vector", required=True)
    q.add_argument("--alphas", default="0.1,0.3,0.5,0.7,0.9")
    q.add_argument("--layers", default="auto", help="VLM layer indices and/or 'auto', comma-separated")
    q.add_argument("--cutoffs", default="200", help="low-pass cutoffs (-1: none), comma-separated")
    q.add_argument("--resample", choices=["lmn", "interp"], default="lmn")
    q.add_argument("--data")
    q.add_argument("--split")
    q.add_argument("--limit", type=int)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--batch-size", type=int, default=1)
    q.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--json", action="store_true")
    q.add_argument("--no-progress", action="store_true")
    device_args(q)
    db_arg(q)
    q.set_defaults(handler=cmd_sweep, accepts_method_flags=True)

    q = l2v.add_parser("analyze", help="LAT dispersion of the LLM's and the VLM's CoT directions, "
                                       "before/after low-pass")
    q.add_argument("--llm", required=True)
    q.add_argument("--vlm", required=True)
    q.add_argument("--pairs", help="default: methods/l2v_cot/data/contrast_pairs.jsonl")
    q.add_argument("--contrast", choices=["prompt", "still2"], default="prompt")
    q.add_argument("--llm-layer", type=int, help="default: the middle layer")
    q.add_argument("--vlm-layer", default="auto", help="index or 'auto' (relative depth)")
    q.add_argument("--cutoff", type=int, default=200)
    q.add_argument("--n", type=int, default=100)
    q.add_argument("--batch-size", type=int, default=4)
    q.add_argument("--json", action="store_true")
    device_args(q)
    db_arg(q)
    q.set_defaults(handler=cmd_analyze)

    q = l2v.add_parser("textside", help="lm-eval text tasks: the source LLM, or a VLM's text side with/without "
                                        "the injection")
    q.add_argument("--model", required=True, help="a causal LM or a VLM (detected from its config)")
    q.add_argument("--tasks", default="l2v_arith", help="comma-separated: methods/l2v_cot/tasks/*.yaml names or "
                                                        "lm-eval task names")
    q.add_argument("--vector", help="direction file: score unsteered AND steered")
    q.add_argument("--alpha", type=float, default=0.5)
    q.add_argument("--layer", default="auto")
    q.add_argument("--source-layer", type=int, default=-1)
    q.add_argument("--cutoff", type=int, default=200)
    q.add_argument("--resample", choices=["lmn", "interp"], default="lmn")
    q.add_argument("--steer", choices=["first", "all"], default="first", help="which positions are steered")
    q.add_argument("--limit", type=int)
    q.add_argument("--batch-size", type=int, default=8)
    q.add_argument("--max-gen-toks", type=int, default=256, help="default when a task sets none")
    q.add_argument("--json", action="store_true")
    device_args(q)
    db_arg(q)
    q.set_defaults(handler=cmd_textside)
