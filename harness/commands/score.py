"""`harness score`: a prediction file scored by a benchmark's official rule."""
from __future__ import annotations

import json

def cmd_score(args) -> int:
    from harness.scoring.predictions import score_predictions

    judge = None
    if args.judge_url or args.judge_model:
        from harness.run.judge import judge_from_args

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


def add_commands(sub) -> None:
    from harness.run.judge import add_judge_arguments  # stdlib only

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
