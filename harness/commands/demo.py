"""`harness demo`: a zoo model trained here on real images, the methods, easy-VQA plus the eight
benchmarks' fixtures, SQLite; the table it prints has numbers that mean something on easy-VQA."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from harness.commands._common import UsageError, db_arg, quiet_libraries

DEFAULT_MODEL = "zoo:easyvqa-qwen2vl"
DEFAULT_METHODS = "direct,cot,mm-cot,ivt-lr"
FIXTURE_BENCHES = ("m3cot", "mathvista", "mathverse", "mmstar", "mmbench", "mmvp", "pope", "scienceqa")
# A method that needs a trained checkpoint takes it from the zoo: METHOD → (option, zoo folder, the
# options the checkpoint was trained with that its run must repeat, read from its config.json).
ZOO_CHECKPOINTS = {"ivt-lr": ("checkpoint", "{model}-ivt-lr", ("image_size", "top_k_patches")),
                   "lare": ("checkpoint", "{model}-lare", ())}  # zoo:easyvqa-llava only (LaRe's LLaVA layout)
# Tokens a generated rationale needs on easy-VQA (about 40) with room to spare; direct stops at <|im_end|>.
MAX_NEW_TOKENS = 64


def _checkpoint_options(method: str, model: str) -> dict:
    from harness.backbones import ZOO_PREFIX, zoo_root

    if method not in ZOO_CHECKPOINTS:
        return {}
    option, pattern, trained_with = ZOO_CHECKPOINTS[method]
    if not model.startswith(ZOO_PREFIX):
        raise UsageError(f"demo: {method} needs a trained checkpoint, which the zoo has only for zoo models; "
                         f"drop {method} from --methods or pass a zoo:NAME --model")
    folder = zoo_root() / pattern.format(model=model[len(ZOO_PREFIX):])
    if not (folder / "config.json").is_file():
        raise UsageError(f"demo: {method} needs its checkpoint {folder}, which is not built; drop {method} from "
                         f"--methods, or build it (README: the proving ground)")
    config = json.loads((folder / "config.json").read_text())
    return {option: str(folder), **{key: config[key] for key in trained_with}}


def cmd_demo(args) -> int:
    """The zoo model over easy-VQA test questions and the fixture subsets, every method, one database."""
    from harness.backbones import ModelLoadError, local_path

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    benches = [b.strip() for b in args.benches.split(",") if b.strip()]
    unknown = [b for b in benches if b != "easyvqa" and b not in FIXTURE_BENCHES]
    if unknown:
        raise UsageError(f"demo: no demo data for {', '.join(unknown)}; choose from easyvqa, "
                         f"{', '.join(FIXTURE_BENCHES)}")
    if args.n < 1 or args.easyvqa_n < 1:
        raise UsageError("demo: --n and --easyvqa-n must be at least 1")
    try:
        local_path(args.model)  # a zoo model must be built: say so before anything runs
    except ModelLoadError as error:
        raise UsageError(str(error)) from None
    extra = {m: _checkpoint_options(m, args.model) for m in methods}
    quiet_libraries()
    from harness.run.runner import RunSpec, execute
    from harness.testing.fixtures import write_all

    root = Path(args.out)
    fixtures = [b for b in benches if b != "easyvqa"]
    data = write_all(root / "data", n=args.n, seed=0, benches=fixtures) if fixtures else {}
    db = args.db or f"sqlite:///{root / 'harness.db'}"
    began, rows = time.perf_counter(), []
    for bench in benches:
        for method in methods:
            spec = RunSpec(method=method, bench=bench, model=args.model, data=str(data[bench]) if bench in data else None,
                           split="test" if bench == "easyvqa" else None,
                           limit=args.easyvqa_n if bench == "easyvqa" else None, batch_size=args.batch_size, db=db,
                           progress=False, method_options={"max_new_tokens": MAX_NEW_TOKENS, **extra[method]})
            report = execute(spec)
            rows.append((method, bench, report))
            m = report.metrics
            print(f"{method:>7} on {bench:<9} run {report.run_id}: accuracy {m['accuracy']:.1f} ± "
                  f"{m['accuracy_se']:.1f} %, {m['mean_generated_tokens']} generated tokens, "
                  f"{m['samples_per_second']} samples/s", file=sys.stderr, flush=True)
    print(_table(rows))
    print(f"\n{len(rows)} runs in {time.perf_counter() - began:.0f} s. On easyvqa the model is trained (chance: about "
          f"40 %); the fixtures are made-up images and questions it has never seen, so there it is at chance: "
          f"they show the pipeline and the official scoring of each benchmark.\n"
          f"results: {db}\n  harness runs --db {db}\n  harness show RUN_ID --db {db}\n"
          f"  harness leaderboard --db {db}   (browse them at http://127.0.0.1:7860)")
    return 0


def _table(rows) -> str:
    """Markdown: one line per run (accuracy ± SE, tokens, samples/s), easyvqa first."""
    out = ["| method | benchmark | n | accuracy % ± SE | generated tokens | samples/s |",
           "|---|---|---:|---:|---:|---:|"]
    for method, bench, report in rows:
        m = report.metrics
        out.append(f"| {method} | {bench} | {m['n']} | {m['accuracy']:.1f} ± {m['accuracy_se']:.1f} | "
                   f"{m['mean_generated_tokens']:.1f} | {m['samples_per_second']:.1f} |")
    return "\n".join(out)


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="a zoo model trained on easy-VQA: every method over easy-VQA and the "
                                    "eight benchmarks' fixtures, into SQLite, with a table")
    p.add_argument("--out", default="results/demo", help="where the fixture data and the database go")
    p.add_argument("--model", default=DEFAULT_MODEL, help="hub id, folder or zoo:NAME")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--benches", default=",".join(("easyvqa", *FIXTURE_BENCHES)))
    p.add_argument("--easyvqa-n", type=int, default=500, help="easy-VQA test questions (a seeded subset)")
    p.add_argument("--n", type=int, default=24, help="questions per fixture benchmark")
    p.add_argument("--batch-size", type=int, default=32)
    db_arg(p)
    p.set_defaults(handler=cmd_demo)
