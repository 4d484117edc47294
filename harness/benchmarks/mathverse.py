"""MathVerse testmini (VLMEvalKit ``MathVerse_MINI`` and its single-version variants).

Official scoring needs an LLM judge in two stages (``MathVerse.evaluate``): the judge extracts the
answer from the response (``MathVerse_auxeval_extract``), then decides whether it matches the
standard answer (``MathVerse_auxeval_score``; an extraction equal to the answer string skips the
call), and ``MathVerse_acc`` reports accuracy per ``problem_version`` with per-subject / subfield
columns. ``MathVerse_MINI`` holds all five image-bearing versions (Text Dominant, Text Lite, Vision
Intensive, Vision Dominant, Vision Only); ``--split`` picks a single-version variant.

- With a judge (``score(..., judge=JudgeConfig)``): exactly that, through VLMEvalKit's ``evaluate``
  with its judge pointed at the endpoint; ``"scoring": "judge"``.
- Without one: a rule, ``"scoring": "rule-based"``, aggregated by ``MathVerse_acc``. Multiple-choice
  answers: the option letter ``can_infer`` reads (options parsed from the question's "Choices"
  block); free-form answers: the stripped answer equal to the standard answer (VLMEvalKit's own
  ``post_check_score``), or both parse as the same number. Anything else is ``undecided`` and counts
  as wrong, so the number is a lower bound of the official one.
"""
from __future__ import annotations

import json
import os
import re
import string
import tempfile

from harness.api import Grade, Sample, register_benchmark
from harness.api.benchmark import Judge
from harness.api.scores import ScoreResult

from harness.benchmarks.vlmeval_common import EMPTY, VLMEvalBenchmark, bucket, frame_dict, import_vlmeval, literal, text

RULE_SCORER = "mathverse:letter-or-exact-number-rule (no judge)"
_OPTION_LINE = re.compile(r"^\s*\(?([A-H])\)?\s*[:.：)]\s*(.*?)\s*$", re.MULTILINE)


def metadata_cell(value) -> str | None:
    """``metadata``: a dict literal that ``MathVerse_acc`` can read (it parses ``x.replace("'", '"')`` as JSON)."""
    cell = text(value) if isinstance(value, str) else ""
    try:
        parsed = json.loads(cell.replace("'", '"'))
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parse_metadata(cell, None), dict):
        return None
    return (f"holds {cell[:40]!r}, not a dict literal such as {{'subject': 'plane geometry', 'subfield': 'length'}} "
            "as in MathVerse_MINI.tsv (VLMEvalKit parses this cell to score); fix that row")


def parse_metadata(cell, default: dict | None = {}) -> dict | None:  # noqa: B006 (never mutated)
    try:
        value = literal(text(cell))
    except ValueError:
        return default
    return value if isinstance(value, dict) else default


def question_options(question: str) -> dict[str, str]:
    """The lettered options of a MathVerse question ("Choices:\\nA:2\\nB:..."), in order."""
    block = question.split("Choices:", 1)[1] if "Choices:" in question else question
    return {m.group(1): m.group(2) for m in _OPTION_LINE.finditer(block)}


def _number(value: str) -> float | None:
    try:
        return float(value.strip().rstrip(".").replace(",", ""))
    except ValueError:
        return None


def rule_verdict(question: str, answer: str, prediction: str, question_type: str = "") -> tuple[str, str]:
    """``(verdict, extracted)``: verdict is correct, wrong or undecided (only a judge could tell)."""
    import_vlmeval()
    from vlmeval.utils import can_infer

    answer, prediction = str(answer).strip(), str(prediction).strip()
    multi = question_type == "multi-choice" or (not question_type and re.fullmatch(r"[A-H]", answer) is not None)
    if multi:
        options = question_options(question) or dict.fromkeys(string.ascii_uppercase[:4], "")
        found = can_infer(prediction, dict(options))
        if not found:
            return "undecided", ""
        return ("correct" if found == answer else "wrong"), found
    if prediction == answer:
        return "correct", prediction
    gold, given = _number(answer), _number(prediction)
    if gold is not None and given is not None:
        return ("correct" if gold == given else "wrong"), prediction
    return "undecided", ""


@register_benchmark("mathverse")
class MathVerse(VLMEvalBenchmark):
    description = (
        "MathVerse testmini (VLMEvalKit MathVerse_MINI; --split vision_only, vision_dominant, vision_intensive, "
        "text_lite, text_dominant, vision_only_cot); official two-stage LLM-judge scoring (--judge-url), "
        "else a rule, labelled rule-based"
    )
    label = "MathVerse"
    vlmeval_class = "MathVerse"
    variants = {
        "mini": "MathVerse_MINI",
        "vision_only": "MathVerse_MINI_Vision_Only",
        "vision_dominant": "MathVerse_MINI_Vision_Dominant",
        "vision_intensive": "MathVerse_MINI_Vision_Intensive",
        "text_lite": "MathVerse_MINI_Text_Lite",
        "text_dominant": "MathVerse_MINI_Text_Dominant",
        "vision_only_cot": "MathVerse_MINI_Vision_Only_cot",
    }
    required_columns = ("index", "question", "answer", "question_for_eval", "metadata", "problem_version", "image")
    official_columns = ("index", "image", "question", "answer", "question_type", "problem_version", "metadata",
                        "query_wo", "query_cot", "question_for_eval")
    category_column = "problem_version"
    cell_rules = {**VLMEvalBenchmark.cell_rules, "metadata": metadata_cell}

    def sample(self, position: int) -> Sample:
        sample = super().sample(position)
        row = self.dataset.data.iloc[position]
        metadata = parse_metadata(row["metadata"])
        sample.choices = []  # the options are part of the question text
        sample.meta = {"question_type": text(row.get("question_type")), "subject": metadata.get("subject", ""),
                       "subfield": metadata.get("subfield", ""), "question_for_eval": text(row["question_for_eval"])}
        return sample

    def grade(self, sample: Sample, answer: str) -> Grade:
        """The rule (no judge call per sample; the run's judge, if any, scores in ``score``)."""
        self.dataset  # loads the data (and imports vlmeval) on first use
        verdict, extracted = rule_verdict(sample.question, sample.gold, answer, sample.meta.get("question_type", ""))
        return Grade(extracted=extracted, correct=verdict == "correct")

    def score(self, samples: list[Sample], answers: list[str], judge: Judge | None = None) -> ScoreResult:
        samples, answers = list(samples), list(answers)
        if not samples:
            return {"scoring": "judge" if judge else "rule-based", "overall": dict(EMPTY), "by_category": {}}
        uids = self.check_samples(samples, answers)
        from vlmeval.smp import dump, get_intermediate_file_path, load

        if judge is not None:
            acc, scored = self.run_judged(
                uids, answers, judge, read=lambda f, name: load(get_intermediate_file_path(f, f"_{name}_score")))
            hits = [bool(x) for x in scored["score"]]
            result = self._from_acc(acc, samples, hits)
            result.update(scoring="judge", scorer=judge.scorer_name())
            return result
        from vlmeval.dataset.utils.mathverse import MathVerse_acc

        verdicts = [rule_verdict(s.question, s.gold, a, s.meta.get("question_type", "")) for s, a in zip(samples, answers)]
        table = self.prediction_table(uids, answers)
        table["extract"] = [e for _, e in verdicts]
        table["score"] = [v == "correct" for v, _ in verdicts]
        with tempfile.TemporaryDirectory(prefix="harness-mathverse-") as tmp:
            storage = os.path.join(tmp, "rule_score.xlsx")  # the format VLMEvalKit stores its scores in
            dump(table, storage)
            acc = MathVerse_acc(storage)
        kinds = [v for v, _ in verdicts]
        result = self._from_acc(acc, samples, [v == "correct" for v in kinds])
        result.update(scoring="rule-based", scorer=RULE_SCORER, undecided=kinds.count("undecided"),
                      decided={"correct": kinds.count("correct"), "wrong": kinds.count("wrong")},
                      note="no LLM judge: option letters and exact (numeric) answers only; undecided answers "
                           "count as wrong, so this is a lower bound of the official score (pass --judge-url/"
                           "--judge-model for it)")
        return result

    def _from_acc(self, acc, samples: list[Sample], hits: list[bool]) -> ScoreResult:
        raw = frame_dict(acc)
        counts: dict[str, list[int]] = {}
        for sample, hit in zip(samples, hits):
            c = counts.setdefault(sample.category, [0, 0])
            c[0] += int(hit)
            c[1] += 1
        by_version = {}
        for i, version in enumerate(raw["split"]):
            by_version[str(version)] = {**bucket(*counts.get(str(version), [0, 0])),
                                        "accuracy": round(raw["Overall"][i], 2)}  # MathVerse_acc's number
        return {
            # MathVerse_acc reports per problem_version only; the overall is the mean over all rows
            "overall": bucket(sum(hits), len(hits)),
            "by_category": dict(sorted(by_version.items())),
            "vlmeval": {"dataset": self.vlmeval_name, "acc": raw},
        }
