"""MMStar, loaded and scored through VLMEvalKit's own ``ImageMCQDataset``.

The data is VLMEvalKit's ``MMStar.tsv`` (base64 images; a short ``image`` cell names another row's
index). A subclass of ``ImageMCQDataset`` reads that file directly (see
:mod:`harness.benchmarks.vlmeval_common`), so VLMEvalKit never downloads or md5-checks anything,
while the dataset name stays ``MMStar``: ``evaluate`` then takes exactly the path VLMEvalKit takes
for MMStar (plain, non-circular MCQ; answers matched by ``can_infer`` under ``exact_matching``;
accuracy overall and per ``category``).
"""
from __future__ import annotations

from harness.api import register_benchmark
from harness.benchmarks.vlmeval_common import VLMEvalMCQBenchmark, build_command

VLMEVAL_NAME = "MMStar"  # VLMEvalKit's name: evaluate() picks its scoring logic from it
REQUIRED_COLUMNS = ("index", "question", "answer", "A", "B", "C", "D", "category", "image")
OFFICIAL_COLUMNS = ("index", "question", "answer", "A", "B", "C", "D", "category", "l2_category", "image")
BUILD_COMMAND = build_command(VLMEVAL_NAME)


@register_benchmark("mmstar")
class MMStar(VLMEvalMCQBenchmark):
    description = (
        "MMStar (1,500 vision-indispensable MCQs, 6 capabilities) via VLMEvalKit's ImageMCQDataset "
        "'MMStar'; official exact-matching scoring"
    )
    data_help = (
        "VLMEvalKit's MMStar.tsv, by default $LMUData/MMStar.tsv (LMUData defaults to ~/LMUData); "
        f"get it on a machine with internet with `{BUILD_COMMAND}`, or pass --data PATH"
    )
    label = "MMStar"
    variants = {"test": VLMEVAL_NAME}  # MMStar has a single split
    required_columns = REQUIRED_COLUMNS
    official_columns = OFFICIAL_COLUMNS
    meta_columns = ("l2_category",)
