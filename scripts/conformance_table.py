"""Print the conformance table (benchmark × tricky answer kind → harness vs VLMEvalKit) and the time to
load and score each fixture benchmark.

    .venv/bin/python scripts/conformance_table.py [--n 24] [--benches mmstar,mmbench,...] [--no-judge]

Each cell scores one prediction file (every row answered in that kind) through `harness score`'s code
path and through the stock VLMEvalKit dataset's `evaluate` (see harness/testing/conformance.py).
MathVista/MathVerse with a judge use the test judge server (tests/judge_server.py, 127.0.0.1).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALL = ("mmstar", "mmbench", "mmvp", "pope", "scienceqa", "mathvista", "mathverse")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--benches", default=",".join(ALL))
    parser.add_argument("--no-judge", action="store_true", help="skip the judge rows (MathVista/MathVerse)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    from harness.api import BENCHMARKS
    from harness.testing.fixtures import write_all
    from harness.testing.conformance import compare, kinds_for

    benches = args.benches.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = write_all(tmp / "fixtures", n=args.n, seed=0, benches=benches)
        t0 = time.perf_counter()
        from harness.benchmarks.vlmeval_common import import_vlmeval

        import_vlmeval()
        print(f"import vlmeval: {time.perf_counter() - t0:.1f} s\n")

        print("| bench | load (s) | score gold (s) | rows |")
        print("|---|---|---|---|")
        for bench in benches:
            t0 = time.perf_counter()
            b = BENCHMARKS.get(bench)(str(files[bench]))
            samples = list(b.samples())
            t1 = time.perf_counter()
            b.score(samples, [s.gold for s in samples])
            t2 = time.perf_counter()
            print(f"| {bench} | {t1 - t0:.3f} | {t2 - t1:.3f} | {len(samples)} |")

        print("\n| bench | tricky case | scoring | harness | VLMEvalKit | identical |")
        print("|---|---|---|---|---|---|")
        rows = []
        for bench in benches:
            if bench == "mathverse":
                continue  # no VLMEvalKit score without a judge
            for kind in [None, *kinds_for(bench)]:
                r = compare(bench, kind, files[bench], tmp / "work" / bench / str(kind))
                rows.append(r)
                print(f"| {bench} | {r['kind']} | {r['scoring']} | {r['harness']} | {r['vlmeval']} | {r['same']} |")
        if not args.no_judge and {"mathvista", "mathverse"} & set(benches):
            from harness.run.judge import JudgeConfig
            from tests.judge_server import perfect_judgement, serve_judge

            with serve_judge(lambda p, b: perfect_judgement(p, b) or "null") as url:
                judge = JudgeConfig(url=url, model="test-judge")
                for bench in ("mathvista", "mathverse"):
                    if bench not in benches:
                        continue
                    for kind in [None, *kinds_for(bench)]:
                        r = compare(bench, kind, files[bench], tmp / "judge" / bench / str(kind), judge=judge)
                        rows.append(r)
                        print(f"| {bench} | {r['kind']} | {r['scoring']} | {r['harness']} | {r['vlmeval']} | "
                              f"{r['same']} |")
        bad = [r for r in rows if not r["same"]]
        print(f"\n{len(rows) - len(bad)}/{len(rows)} cases identical")
        return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
