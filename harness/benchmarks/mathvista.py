"""MathVista testmini (VLMEvalKit ``MathVista_MINI``, class ``MathVista``).

Official scoring needs an LLM judge: VLMEvalKit first tries a rule on the raw answer
(``post_check(prefetch=True)``: for multiple choice, ``can_infer`` finds the option letter; for integer
and float answers, the whole answer must parse as that number and equal the gold one), and asks the
judge to extract the answer from every other response (``MathVista_auxeval``), then scores the
extractions (``MathVista_acc``: accuracy overall, per ``task`` and per ``skills``).

- With a judge (``score(..., judge=JudgeConfig)``): exactly that, through VLMEvalKit's ``evaluate``
  with its judge pointed at the configured endpoint (``harness.run.judge.vlmeval_judge_env``);
  ``"scoring": "judge"``.
- Without one: the rule stage alone, aggregated by ``MathVista_acc`` as if the judge had returned
  nothing. ``"scoring": "rule-based"``; a lower bound of the official score; ``undecided`` counts
  the answers the rule could not read (free-form text, lists, responses with prose around a number),
  which the judge would have read.

VLMEvalKit 0.0.20 quirks kept as they are (they are the official numbers): ``post_check`` compares
``str(None)`` for ``text`` / ``list`` answer types (it stringifies its unset result, not the
response), so those answers never score, with or without a judge; and a right answer of 0 or 0.0
is falsy at the rule stage, so only a judge can accept it.
"""
from __future__ import annotations

import ast
import os
import tempfile
from typing import Any

from harness.api import DataError, Grade, Sample, register_benchmark
from harness.api.benchmark import Judge
from harness.api.scores import ScoreResult

from harness.benchmarks.vlmeval_common import (EMPTY, VLMEvalBenchmark, bucket, frame_dict, import_vlmeval,
                                               list_of_strings_cell, literal, plain, text)

RULE_SCORER = "mathvista:vlmeval-prefetch-rule (no judge)"


def rule_verdict(line: dict) -> tuple[str, str, Any]:
    """``(verdict, extracted, res)`` of VLMEvalKit's rule stage on one answer: verdict is correct, wrong
    or undecided (the rule reads nothing it can compare; the official judge would decide); ``res`` is
    what ``MathVista_auxeval`` stores for it when no judge answers (the prefetched value, else '')."""
    import_vlmeval()
    from vlmeval.dataset.utils.mathvista import list_to_dict, post_check
    from vlmeval.utils import can_infer

    prediction = str(line["prediction"])
    prefetched = post_check(line, prefetch=True)
    if prefetched:
        return "correct", str(prefetched), prefetched
    if line["question_type"] == "multi_choice":
        found = can_infer(prediction, list_to_dict(ast.literal_eval(line["choices"])))
        return ("wrong", found, "") if found else ("undecided", "", "")
    convert = {"integer": int, "float": float}.get(line["answer_type"])
    if convert is None:
        return "undecided", "", ""
    try:
        value = convert(prediction)
    except ValueError:
        return "undecided", "", ""
    if value == convert(line["answer"]):
        # A right answer of 0: post_check returns the falsy 0, so VLMEvalKit asks the judge.
        return "undecided", str(value), ""
    return "wrong", str(value), ""


@register_benchmark("mathvista")
class MathVista(VLMEvalBenchmark):
    description = (
        "MathVista testmini (VLMEvalKit MathVista_MINI); official scoring with an LLM judge (--judge-url), "
        "else VLMEvalKit's rule stage alone, labelled rule-based"
    )
    label = "MathVista"
    vlmeval_class = "MathVista"
    variants = {"testmini": "MathVista_MINI"}
    required_columns = ("index", "question", "answer", "question_type", "answer_type", "choices", "task",
                        "skills", "image")
    official_columns = ("index", "image", "question", "answer", "answer_option", "choices", "question_type",
                        "answer_type", "precision", "unit", "task", "grade", "source", "skills")
    category_column = "task"
    meta_columns = ("question_type", "answer_type", "answer_option", "precision", "unit", "skills", "grade",
                    "source")

    # MathVista_acc eval()s every row's skills; post_check eval()s choices of multiple-choice rows.
    cell_rules = {**VLMEvalBenchmark.cell_rules,
                  "skills": list_of_strings_cell("['arithmetic reasoning']"),
                  "choices": list_of_strings_cell("['3/11', '8/11']", required=False, numbers=True)}

    def validate_table(self, table) -> None:
        for i, row in table.iterrows():
            where = f"MathVista data {self.path}: line {i + 2} (index {row['index']})"
            if row["question_type"] == "multi_choice":
                if "answer_option" not in table or text(row["answer_option"]) == "":
                    raise DataError(f"{where} is multiple choice but has no answer_option (the gold letter "
                                    "VLMEvalKit compares with); fix that row")
                try:
                    options = literal(text(row["choices"]))  # a list of strings or numbers (cell_rules)
                except ValueError:
                    options = None
                if not isinstance(options, list) or not options:
                    raise DataError(f"{where}, column choices holds {text(row['choices'])[:40]!r}, but the row is "
                                    "multiple choice: list its options as in MathVista_MINI.tsv (e.g. ['3/11', "
                                    "'8/11']) or fix that row")

    def sample(self, position: int) -> Sample:
        row = self.dataset.data.iloc[position]
        image = row["image"]
        multi = row["question_type"] == "multi_choice"
        return self.make_sample(
            uid=str(row["index"]),
            question=text(row["question"]),
            gold=text(row["answer_option"]) if multi else text(row["answer"]),
            choices=[str(c) for c in ast.literal_eval(text(row["choices"]))] if multi else [],
            image_refs=list(image) if isinstance(image, list) else [image],
            category=text(row["task"]),
            meta={"answer": text(row["answer"]),
                  **{c: plain(row[c]) for c in self.meta_columns if c in row}},
        )

    def line(self, sample: Sample, answer: str) -> dict[str, Any]:
        row = self.row(sample.uid)
        line = dict(row) if row is not None else {}
        line["prediction"] = str(answer)
        return line

    def grade(self, sample: Sample, answer: str) -> Grade:
        """The rule stage (no judge call per sample; the run's judge, if any, scores in ``score``)."""
        self.dataset  # loads the data (and imports vlmeval) on first use
        verdict, extracted, _ = rule_verdict(self.line(sample, answer))
        return Grade(extracted=extracted, correct=verdict == "correct")

    def score(self, samples: list[Sample], answers: list[str], judge: Judge | None = None) -> ScoreResult:
        samples, answers = list(samples), list(answers)
        if not samples:
            return {"scoring": "judge" if judge else "rule-based", "overall": dict(EMPTY), "by_category": {}}
        uids = self.check_samples(samples, answers)
        if judge is not None:
            acc, _ = self.run_judged(uids, answers, judge)
            result = self._from_acc(acc, samples)
            result.update(scoring="judge", scorer=judge.scorer_name())
            return result
        verdicts = [rule_verdict(self.line(s, a)) for s, a in zip(samples, answers)]
        from vlmeval.dataset.utils.mathvista import MathVista_acc
        from vlmeval.smp import dump

        table = self.prediction_table(uids, answers)
        # What MathVista_auxeval stores when no judge answers: the prefetched answer, else ''.
        table["res"] = [res for _, _, res in verdicts]
        table["log"] = ["Prefetch succeed" if v == "correct" else "no judge: rule undecided or wrong"
                        for v, _, _ in verdicts]
        with tempfile.TemporaryDirectory(prefix="harness-mathvista-") as tmp:
            storage = os.path.join(tmp, "rule_result.xlsx")  # the format VLMEvalKit stores it in
            dump(table, storage)
            acc = MathVista_acc(storage)
        result = self._from_acc(acc, samples)
        kinds = [v for v, _, _ in verdicts]
        result.update(scoring="rule-based", scorer=RULE_SCORER, undecided=kinds.count("undecided"),
                      decided={"correct": kinds.count("correct"), "wrong": kinds.count("wrong")},
                      note="no LLM judge: VLMEvalKit's rule stage only (multiple-choice letters, exact integer/"
                           "float answers); undecided answers count as wrong, so this is a lower bound of "
                           "the official score (pass --judge-url/--judge-model for it)")
        return result

    def _from_acc(self, acc, samples: list[Sample]) -> ScoreResult:
        raw = frame_dict(acc)
        table = {name: (tot, hit) for name, tot, hit in zip(raw["Task&Skill"], raw["tot"], raw["hit"])}
        tasks = sorted({s.category for s in samples})
        skills = sorted(k for k in table if k != "Overall" and k not in tasks)
        return {
            "overall": bucket(table["Overall"][1], table["Overall"][0]),
            "by_category": {t: bucket(table[t][1], table[t][0]) for t in tasks if t in table},
            "by_skill": {k: bucket(table[k][1], table[k][0]) for k in skills},
            "vlmeval": {"dataset": self.vlmeval_name, "acc": raw},
        }

