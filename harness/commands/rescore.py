"""`harness rescore`: score a stored run's predictions again, e.g. with an LLM judge, without rerunning it.

The run's samples are read, never changed; the result is one more score row (``Store.add_score``),
labelled with its kind ("judge", "rule-based", "official") so different metrics never share a column.
"""
from __future__ import annotations

import json
import logging

from harness.commands._common import db_arg, quiet_libraries

log = logging.getLogger("harness")


def _rescore_reference(args, store, benchmark, run) -> int:
    """The published methods' own evaluation rules over the stored texts: kind "reference" rows."""
    from harness.run.runner import reference_rows, save_score

    results = reference_rows(store.samples(args.run_id), benchmark)
    if not results:
        raise ValueError(f"benchmark {run['benchmark']} has no published method's evaluation rule to score by "
                         "(--reference knows m3cot: IVT-LR's lenient rule)")
    for result in results:
        score_id = save_score(store, args.run_id, run["benchmark"], result)
        if args.json:
            print(json.dumps({"run_id": args.run_id, "score_id": score_id, **result}, indent=2))
        else:
            print(f"run {args.run_id}: reference score {result['overall']['accuracy']:.2f} % ({result['scorer']}; "
                  f"{result.get('note', '')}); stored as score {score_id}")
    return 0


def cmd_rescore(args) -> int:
    from harness.api import BENCHMARKS, DataError
    from harness.run.judge import judge_from_args
    from harness.run.runner import save_score, score_stored, uses_judge
    from harness.run.store import Store

    judge = judge_from_args(args.judge_url, args.judge_model, args.judge_key_env)
    run = Store(args.db, read_only=True).run(args.run_id)  # a missing database is an error, not created
    store = Store(args.db)  # read-write for the score row; samples are only read
    if run["status"] != "finished":
        log.warning("run %d is %s: scoring the %d samples stored so far", args.run_id, run["status"],
                    run["n_samples"])
    if not run["n_samples"]:
        raise ValueError(f"run {args.run_id} has no stored samples to score")
    data = args.data or (run.get("subset") or {}).get("data")
    benchmark = BENCHMARKS.get(run["benchmark"])(data, run.get("split"))
    len(benchmark)  # loads the data: a DataError surfaces here
    fingerprint = benchmark.fingerprint()
    if run.get("data_fingerprint") and fingerprint != run["data_fingerprint"]:
        raise DataError(f"the {run['benchmark']} data at {data or 'its default location'} (fingerprint {fingerprint}) "
                        f"is not the data run {args.run_id} was made on ({run['data_fingerprint']}): "
                        "pass --data with the original file")
    if judge is not None:
        judge.check()
    quiet_libraries()
    if args.reference:
        return _rescore_reference(args, store, benchmark, run)
    result = score_stored(store, args.run_id, benchmark, judge=judge)
    if not result:
        raise DataError(f"none of run {args.run_id}'s samples could be read from the {run['benchmark']} data")
    if judge is not None and not uses_judge(result):
        raise ValueError(f"benchmark {run['benchmark']} is scored by its own rule and takes no LLM judge; "
                         "rescore it without --judge-url")
    score_id = save_score(store, args.run_id, run["benchmark"], result)
    accuracy = (result.get("overall") or {}).get("accuracy")
    if args.json:
        print(json.dumps({"run_id": args.run_id, "score_id": score_id, **result}, indent=2))
    else:
        scorer = result.get("scorer", f"{run['benchmark']}:{result.get('scoring', 'official')}")
        shown = f"{accuracy:.2f} %" if accuracy is not None else "n/a"
        print(f"run {args.run_id}: {result.get('scoring', 'official')} score {shown} ({scorer}); "
              f"stored as score {score_id} (harness show {args.run_id})")
    return 0


def add_commands(sub) -> None:
    from harness.run.judge import add_judge_arguments

    p = sub.add_parser("rescore", help="score a stored run again (e.g. with an LLM judge); adds a score row")
    p.add_argument("run_id", type=int)
    add_judge_arguments(p, "an OpenAI-compatible API base, e.g. http://127.0.0.1:8000/v1 "
                           "(without it: the benchmark's own scoring)")
    p.add_argument("--data", help="the benchmark data, if not where the run read it (checked by fingerprint)")
    db_arg(p)
    p.add_argument("--reference", action="store_true",
                   help="score by the published methods' own evaluation rules instead (kind 'reference'; m3cot: "
                        "IVT-LR's lenient 'the answer is X' rule), to line runs up with a paper's numbers")
    p.add_argument("--json", action="store_true", help="print the scoring as JSON")
    p.set_defaults(handler=cmd_rescore)
