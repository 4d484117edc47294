"""`harness demo`: tiny model + fixtures + SQLite, the baselines end to end."""
from __future__ import annotations

from pathlib import Path

from harness.commands._common import db_arg, quiet_libraries

def cmd_demo(args) -> int:
    """Tiny model + bundled fixtures + SQLite: the whole pipeline on a laptop in about a minute."""
    quiet_libraries()
    from harness.testing.fixtures import write_all
    from harness.run.runner import RunSpec, execute
    from harness.backbones.tiny import write_tiny_model

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
    from harness.run.reports import format_runs
    from harness.run.store import Store

    print("\n" + format_runs(Store(db, read_only=True).runs()))
    print(f"\nThe model is random, so accuracy is chance level: the point is the pipeline.\n"
          f"results: {db}\n  harness runs --db {db}\n  harness show RUN_ID --db {db}\n"
          f"  harness export --db {db} --what samples --out samples.csv\n"
          f"  harness leaderboard --db {db}   (browse them at http://127.0.0.1:7860)")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="tiny model + fixtures + SQLite: run the baselines end to end")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--methods", default="direct,cot,mm-cot")
    p.add_argument("--benches", default="m3cot,mmstar")
    p.add_argument("--n", type=int, default=24)
    db_arg(p)
    p.set_defaults(handler=cmd_demo)
