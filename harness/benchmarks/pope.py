"""POPE (VLMEvalKit ``POPE``, class ``ImageYORNDataset``): yes/no object-hallucination probing.

VLMEvalKit reads "Yes"/"No" out of an answer with ``YOrN_Extraction`` (the word yes without no, or
no without yes; anything else is "Unknown", which is wrong under exact matching) and reports, with
``POPE_rating``, F1 ("Overall"), accuracy, precision and recall, over all rows and per category
(adversarial, popular, random; a row may list several, comma-separated, and then counts once per
category in "Overall" too, as ``POPE_rating`` explodes the categories first).
"""
from __future__ import annotations

from harness.api import DataError, Grade, Sample, register_benchmark
from harness.api.benchmark import Judge
from harness.api.scores import Bucket, ScoreResult

from harness.benchmarks.vlmeval_common import EMPTY, VLMEvalBenchmark, frame_dict, text


def _metrics(raw: dict, row: int) -> dict[str, float | None]:
    return {name: round(raw[column][row], 2) if raw[column][row] is not None else None
            for name, column in (("f1", "Overall"), ("accuracy", "acc"), ("precision", "precision"),
                                 ("recall", "recall"))}


@register_benchmark("pope")
class POPE(VLMEvalBenchmark):
    description = (
        "POPE (VLMEvalKit POPE) via ImageYORNDataset; official yes/no extraction, F1 / accuracy / precision / "
        "recall per category (adversarial, popular, random)"
    )
    label = "POPE"
    vlmeval_class = "ImageYORNDataset"
    variants = {"test": "POPE"}
    required_columns = ("index", "question", "answer", "category", "image")
    official_columns = ("index", "question", "answer", "category", "image")

    def validate_table(self, table) -> None:
        for i, answer in enumerate(table["answer"]):
            if text(answer) not in ("Yes", "No"):
                raise DataError(f"POPE data {self.path}: line {i + 2} (index {table['index'][i]}), column answer holds "
                                f"{text(answer)[:40]!r}; POPE's answers are Yes or No (fix that row)")

    def grade(self, sample: Sample, answer: str) -> Grade:
        self.dataset  # imports vlmeval
        from vlmeval.dataset.utils.yorn import YOrN_Extraction

        extracted = YOrN_Extraction(str(answer))
        return Grade(extracted=extracted, correct=extracted == sample.gold)

    def score(self, samples: list[Sample], answers: list[str], judge: Judge | None = None) -> ScoreResult:
        samples, answers = list(samples), list(answers)
        if not samples:
            return {"scoring": "official", "overall": dict(EMPTY), "by_category": {}, "vlmeval": {}}
        uids = self.check_samples(samples, answers)
        acc, _ = self.run_evaluate(uids, answers, model="exact_matching")
        raw = frame_dict(acc)
        rows = {split: i for i, split in enumerate(raw["split"])}
        correct: dict[str, list[int]] = {}
        for sample, answer in zip(samples, answers):
            hit = int(self.grade(sample, answer).correct)
            categories = sample.category.split(",")
            # POPE_rating explodes the comma-separated categories *before* computing Overall, so a row
            # listed under k categories counts k times there; the counts follow the official number.
            for key in ["Overall"] * len(categories) + [c for c in categories if c]:
                c = correct.setdefault(key, [0, 0])
                c[0] += hit
                c[1] += 1

        def block(key: str) -> Bucket:
            # counts are the per-answer judgements; the metrics are VLMEvalKit's POPE_rating
            return {"correct": correct[key][0], "total": correct[key][1], **_metrics(raw, rows[key])}

        return {
            "scoring": "official",
            "primary": "f1",
            "counting": "Overall counts a row once per category it lists (VLMEvalKit's POPE_rating)",
            "overall": block("Overall"),
            "by_category": {cat: block(cat) for cat in sorted(rows) if cat != "Overall"},
            "vlmeval": {"dataset": self.vlmeval_name, "judge": "exact_matching", "acc": raw},
        }
