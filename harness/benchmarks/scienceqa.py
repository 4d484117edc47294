"""ScienceQA, image subset (VLMEvalKit ``ScienceQA_VAL`` / ``ScienceQA_TEST``): plain exact-matching MCQ."""
from __future__ import annotations

from harness.api import register_benchmark

from harness.benchmarks.vlmeval_common import VLMEvalMCQBenchmark


@register_benchmark("scienceqa")
class ScienceQA(VLMEvalMCQBenchmark):
    description = (
        "ScienceQA image subset (VLMEvalKit ScienceQA_VAL; --split test for ScienceQA_TEST) via ImageMCQDataset; "
        "official exact-matching scoring"
    )
    label = "ScienceQA"
    variants = {"val": "ScienceQA_VAL", "test": "ScienceQA_TEST"}
    required_columns = ("index", "question", "answer", "A", "B", "image")
    # the columns VLMEvalKit's MCQ code reads from ScienceQA_*.tsv (hint, options A-E, category)
    official_columns = ("index", "image", "question", "hint", "A", "B", "C", "D", "E", "answer", "category")
    meta_columns = ("l2-category", "split")
    confusable = ("mmstar", "mmbench", "mathvista", "mathverse")
