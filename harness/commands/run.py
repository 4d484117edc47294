"""`harness run`: a method on a benchmark, stored (resumable). Heavy imports stay in the handler."""
from __future__ import annotations

import json

from harness.api.types import DEFAULT_MAX_IMAGE_PIXELS  # stdlib only
from harness.commands._common import db_arg, key_values, quiet_libraries

def _launch(args) -> int:
    """``--processes N``: the same command (less that flag) as N processes; this one only waits."""
    from harness.run.distributed import launch

    argv, skip = [], False
    for token in args.argv:
        if skip:
            skip = False
        elif token == "--processes":
            skip = True
        elif not token.startswith("--processes="):
            argv.append(token)
    return launch(args.processes, argv)


def cmd_run(args) -> int:
    from harness.api import METHODS, coerce_options
    from harness.run.distributed import parse_shard, world

    from harness.run.judge import judge_from_args
    from harness.run.runner import RunSpec, execute

    method_cls = METHODS.get(args.method)
    options = coerce_options(method_cls, {**key_values(args.opt), **args.method_flags})
    shard = parse_shard(args.shard)
    if args.processes is not None and args.processes < 1:
        raise ValueError(f"--processes must be at least 1, got {args.processes}")
    if args.processes and args.processes > 1:
        if world().size > 1:
            raise ValueError("--processes N starts its own launch; under torchrun / accelerate launch leave it out")
        return _launch(args)
    if args.max_new_tokens is not None:
        options["max_new_tokens"] = args.max_new_tokens
    quiet_libraries()
    spec = RunSpec(method=args.method, bench=args.bench, model=args.model, method_options=options, data=args.data,
                   split=args.split, limit=args.limit, seed=args.seed, batch_size=args.batch_size, device=args.device,
                   dtype=args.dtype, revision=args.revision, db=args.db, fresh=args.fresh,
                   progress=not args.no_progress,
                   max_image_pixels=args.max_image_pixels or None,
                   judge=judge_from_args(args.judge_url, args.judge_model, args.judge_key_env), shard=shard)
    report = execute(spec)
    if not world().main:
        return 0  # rank 0 reports for the whole launch
    m = report.metrics
    if m.get("status") == "partial":
        print(f"run {report.run_id}: shard {args.shard} stored ({report.n_new} new); {m['n']} of {m['n_planned']} "
              f"rows in {report.db_url}; union the shards with `harness merge A B ... --into C`")
        return 0
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


def add_commands(sub) -> None:
    from harness.run.judge import add_judge_arguments  # stdlib only

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
    p.add_argument("--processes", type=int, help="evaluate with N processes on this machine (one per GPU "
                   "when CUDA is there); the stored run is the same as with one")
    p.add_argument("--shard", metavar="I/N", help="compute only the I-th of N fixed shares of the samples (0 <= I < "
                   "N), e.g. one per node, each into its own database; `harness merge` unions them")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help=f"an image with more pixels is an error sample, never decoded (default {DEFAULT_MAX_IMAGE_PIXELS:,}"
                        "; 0: no limit)")
    add_judge_arguments(p, "also score with an LLM judge behind this OpenAI-compatible API base, e.g. "
                           "http://127.0.0.1:8000/v1 (MathVista, MathVerse); stored as a separate 'judge' score")
    db_arg(p)
    p.set_defaults(handler=cmd_run, accepts_method_flags=True)
