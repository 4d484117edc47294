"""Conformance of the harness's scoring with VLMEvalKit's own ``evaluate``, case by case.

For one benchmark and one kind of tricky answer (verbose chain of thought, several letters, option
text instead of the letter, empty, yes/no variants, ...), :func:`compare` writes one prediction file
in VLMEvalKit's format (what its inference writes: the TSV columns without ``image`` plus
``prediction``, as .xlsx), then scores it twice:

- **harness**: ``harness.scoring.predictions.score_predictions`` (the code path of ``harness score``
  and of the end of a run: the harness's loader, samples and ``Benchmark.score``);
- **VLMEvalKit**: the *stock* VLMEvalKit dataset class for the official name, built by
  ``vlmeval.dataset.build_dataset`` from ``$LMUData/NAME.tsv`` (its md5 entry temporarily set to the
  fixture's so it loads instead of downloading), and its ``evaluate`` on the same file.

and returns both result tables (VLMEvalKit's own DataFrame, as plain dicts) and the headline numbers.
MathVista without a judge is compared with stock ``evaluate`` under a judge that never answers
(VLMEvalKit then keeps only its rule stage, which is what the harness's rule-based score is);
with a judge, both sides talk to the same judge endpoint.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import string
from pathlib import Path
from typing import Callable, Iterator

MCQ_KINDS = ("letter", "paren-letter", "option-text", "empty", "two-letters", "wrong-letter", "verbose-cot",
             "verbose-cot-option-text", "NA")
YORN_KINDS = ("Yes", "yes-lower-period", "no-sentence", "yes-and-no", "empty", "verbose-cot", "uppercase", "NA")
MATH_KINDS = ("gold", "verbose-cot", "letter-or-number-only", "empty", "wrong", "two-answers", "NA")


def mcq_answer(kind: str, gold: str, options: dict[str, str]) -> str:
    letters = list(options)
    wrong = letters[(letters.index(gold) + 1) % len(letters)] if gold in letters else "A"
    text = options.get(gold, "")
    return {
        "letter": gold,
        "paren-letter": f"({gold})",
        "option-text": text,
        "empty": "",
        "two-letters": f"{gold} or {wrong}",
        "wrong-letter": wrong,
        "verbose-cot": f"Let me look at the image carefully. The shape is drawn in the middle. Considering every "
                       f"option, the answer is {gold}.",
        "verbose-cot-option-text": f"Looking at the image step by step, I see it is {text}.",
        "NA": "NA",
    }[kind]


def yorn_answer(kind: str, gold: str) -> str:
    other = "No" if gold == "Yes" else "Yes"
    return {
        "Yes": "Yes", "yes-lower-period": "yes.", "no-sentence": "No, there is not.", "yes-and-no": "Yes and no",
        "empty": "", "verbose-cot": f"I examine the picture. There is one shape. So the answer is {gold.lower()}.",
        "uppercase": other.upper(), "NA": "NA",
    }[kind]


def math_answer(kind: str, gold: str, row) -> str:
    return {
        "gold": gold,
        "verbose-cot": f"First, look at the figure. Counting carefully step by step, the final answer is {gold}.",
        "letter-or-number-only": f"{gold}.",
        "empty": "",
        "wrong": "7" if gold != "7" else "8",
        "two-answers": f"{gold} or 7",
        "NA": "NA",
    }[kind]


def kinds_for(bench: str) -> tuple[str, ...]:
    return {"pope": YORN_KINDS, "mathvista": MATH_KINDS, "mathverse": MATH_KINDS}.get(bench, MCQ_KINDS)


def answers_for(bench: str, kind: str | None, table) -> list[str]:
    """One answer per row of ``table`` (the stock dataset's data); ``kind=None`` cycles through all kinds."""
    import pandas as pd

    kinds = kinds_for(bench)
    out = []
    for i in range(len(table)):
        row = table.iloc[i]
        k = kind or kinds[i % len(kinds)]
        if bench == "pope":
            out.append(yorn_answer(k, row["answer"]))
        elif bench == "mathvista":
            gold = row["answer_option"] if row["question_type"] == "multi_choice" else str(row["answer"])
            out.append(math_answer(k, gold, row))
        elif bench == "mathverse":
            out.append(math_answer(k, str(row["answer"]), row))
        else:
            options = {c: str(row[c]) for c in string.ascii_uppercase if c in row and not pd.isna(row[c])}
            out.append(mcq_answer(k, row["answer"], options))
    return out


@contextlib.contextmanager
def stock_dataset(bench: str, tsv: Path, lmu_root: Path, split: str | None = None) -> Iterator[object]:
    """VLMEvalKit's own dataset class for the benchmark's official name over ``tsv`` (copied to
    ``lmu_root/NAME.tsv``, ``$LMUData`` pointed there and the class's md5 entry set to the file's), once
    ``tsv`` has passed the harness's checks (the cells VLMEvalKit evaluates as Python above all)."""
    from harness.api import BENCHMARKS
    from harness.benchmarks.vlmeval_common import import_vlmeval

    import_vlmeval()
    import vlmeval.dataset as datasets
    from vlmeval.smp import md5

    cls = BENCHMARKS.get(bench)
    # Stock VLMEvalKit eval()s some cells of the TSV it loads (image lists, index, MathVista's skills and
    # choices): the harness's checks of the file come first, so a hostile TSV never reaches it.
    cls(str(tsv), split).load_table()
    name = cls.variants[split or next(iter(cls.variants))]
    target = lmu_root / f"{name}.tsv"
    shutil.copyfile(tsv, target)
    official = getattr(datasets, cls.vlmeval_class)
    before = official.DATASET_MD5.get(name)
    saved_env = os.environ.get("LMUData")
    official.DATASET_MD5[name] = md5(str(target))
    os.environ["LMUData"] = str(lmu_root)
    try:
        dataset = datasets.build_dataset(name)
        assert type(dataset) is official, f"build_dataset({name!r}) gave {type(dataset).__name__}"
        yield dataset
    finally:
        official.DATASET_MD5[name] = before
        if saved_env is None:
            os.environ.pop("LMUData", None)
        else:
            os.environ["LMUData"] = saved_env


def write_predictions(stock, answers: list[str], path: Path) -> Path:
    """The prediction file VLMEvalKit's inference writes (.xlsx; the data without images + prediction)."""
    from vlmeval.smp import dump

    table = stock.data.drop(columns=[c for c in ("image", "image_path") if c in stock.data]).copy()
    table["prediction"] = answers
    dump(table, str(path))
    return path


@contextlib.contextmanager
def never_answering_judge() -> Iterator[None]:
    """VLMEvalKit's judge replaced by one that never answers (every call fails), so ``evaluate`` keeps
    only its rule stage; VLMEvalKit retries each failed item 5 times, with no waiting here."""
    import vlmeval.dataset.image_vqa as image_vqa
    from vlmeval.dataset.utils.mathvista import FAIL_MSG

    class Silent:
        def working(self):
            return True

        def generate(self, *args, **kwargs):
            return FAIL_MSG

    original = image_vqa.build_judge
    image_vqa.build_judge = lambda **kwargs: Silent()
    try:
        yield
    finally:
        image_vqa.build_judge = original


def headline(bench: str, table: dict) -> dict:
    """The official headline numbers out of VLMEvalKit's result table (as ``frame_dict`` gives it)."""
    if bench == "pope":
        i = table["split"].index("Overall")
        return {"f1": round(table["Overall"][i], 4), "acc": round(table["acc"][i], 4)}
    if bench == "mathvista":
        i = table["Task&Skill"].index("Overall")
        return {"hit": table["hit"][i], "tot": table["tot"][i], "acc": round(table["acc"][i], 4)}
    if bench == "mathverse":
        return {v: round(a, 4) for v, a in zip(table["split"], table["Overall"])}
    if bench == "mmvp":
        return {"pair_acc": round(table["Overall"][0], 4), "question_acc": round(table["Average"][0], 4)}
    return {"acc": round(table["Overall"][0], 4)}


def compare(bench: str, kind: str | None, tsv: Path, work: Path, judge=None,
            evaluate_stock: Callable | None = None) -> dict:
    """Score one tricky-answer prediction file both ways; ``{"harness", "vlmeval", "same", ...}``. ``judge``:
    a :class:`harness.api.benchmark.Judge` (``harness.run.judge.JudgeConfig``)."""
    from harness.benchmarks.vlmeval_common import frame_dict
    from harness.scoring.predictions import score_predictions

    work.mkdir(parents=True, exist_ok=True)
    lmu = work / "LMUData"
    lmu.mkdir(exist_ok=True)
    with stock_dataset(bench, tsv, lmu) as stock:
        answers = answers_for(bench, kind, stock.data)
        pred = write_predictions(stock, answers, work / f"stock_{stock.dataset_name}.xlsx")
        ours = shutil.copyfile(pred, work / f"harness_{stock.dataset_name}.xlsx")  # evaluate writes beside it
        harness = score_predictions(bench, ours, data=str(tsv), judge=judge)
        if judge is not None:
            with judge.vlmeval_env() as kwargs:  # the same judge endpoint as the harness's side
                stock_acc = stock.evaluate(str(pred), **kwargs)
        elif bench == "mathvista":
            with never_answering_judge():
                stock_acc = stock.evaluate(str(pred), model="silent-judge", nproc=1)
        else:
            stock_acc = stock.evaluate(str(pred), model="exact_matching", nproc=1)
    theirs = frame_dict(stock_acc)
    mine = harness["vlmeval"]["acc"]
    return {"bench": bench, "kind": kind or "mixed", "harness": headline(bench, mine),
            "vlmeval": headline(bench, theirs), "same": mine == theirs, "harness_table": mine,
            "vlmeval_table": theirs, "scoring": harness["scoring"]}
