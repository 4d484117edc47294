"""MMVP (VLMEvalKit ``MMVP``): exact-matching MCQ with the question-pair metric.

MMVP's 300 questions come in 150 adjacent pairs (the same question about two CLIP-blind images).
VLMEvalKit applies the pair metric (``report_acc_MMVP``: a pair counts only if both of its
questions are answered correctly; "Overall") only when the dataset name is exactly ``MMVP``; the
benchmark keeps that name whatever the file is called. It also reports the per-question accuracy
("Average"). Pairs are rows ``2i, 2i+1`` in index order and must share their question; a subset
must keep whole pairs (:meth:`MMVP.units`), so :meth:`MMVP.score` scores only complete pairs and counts
the others.
"""
from __future__ import annotations

import logging

from harness.api import DataError, Sample, register_benchmark
from harness.api.benchmark import Judge
from harness.api.scores import ScoreResult

from harness.benchmarks.vlmeval_common import EMPTY, read_hits, VLMEvalMCQBenchmark, bucket, frame_dict, text

log = logging.getLogger(__name__)


@register_benchmark("mmvp")
class MMVP(VLMEvalMCQBenchmark):
    description = (
        "MMVP (VLMEvalKit MMVP) via ImageMCQDataset; exact matching with the official question-pair metric"
    )
    label = "MMVP"
    variants = {"test": "MMVP"}
    required_columns = ("index", "question", "answer", "A", "B", "image")
    official_columns = ("index", "question", "A", "B", "answer", "category", "image")
    confusable = ("mmstar", "mmbench", "mathvista", "mathverse")
    units_label = "pairs"

    def validate_table(self, table) -> None:
        ordered = table.sort_values(by="index", kind="stable").reset_index(drop=True)
        if len(ordered) % 2:
            raise DataError(f"MMVP data {self.path}: {len(ordered)} rows, but MMVP's questions come in pairs of "
                            "adjacent indexes (2i, 2i+1); add or drop the unpaired last row")
        questions = [text(q) for q in ordered["question"]]
        for i in range(0, len(ordered), 2):
            if questions[i] != questions[i + 1]:
                raise DataError(
                    f"MMVP data {self.path}: rows with index {ordered['index'][i]} and {ordered['index'][i + 1]} "
                    "form a pair but ask different questions (column question); MMVP's pair metric needs each pair's "
                    "two rows adjacent in index order with the same question (fix the order or the file)")

    def pairs(self) -> dict[str, int]:
        """uid → pair number (rows 2i and 2i+1 of the data in index order)."""
        ordered = sorted(self.dataset.data["index"], key=int)
        return {str(index): position // 2 for position, index in enumerate(ordered)}

    def sample(self, position: int) -> Sample:
        sample = super().sample(position)
        sample.meta["pair"] = self.pairs_cache().get(sample.uid)
        return sample

    def pairs_cache(self) -> dict[str, int]:
        if getattr(self, "_pairs", None) is None:
            self._pairs = self.pairs()
        return self._pairs

    def units(self) -> list[list[int]]:
        """The question pairs, as positions (both questions of a pair stay together)."""
        pair_of = self.pairs_cache()
        by_pair: dict[int, list[int]] = {}
        for position, index in enumerate(self.dataset.data["index"]):
            by_pair.setdefault(pair_of[str(index)], []).append(position)
        return list(by_pair.values())

    def score(self, samples: list[Sample], answers: list[str], judge: Judge | None = None) -> ScoreResult:
        samples, answers = list(samples), list(answers)
        self.check_samples(samples, answers)
        pair_of = self.pairs_cache()
        seen: dict[int, int] = {}
        for s in samples:
            seen[pair_of[s.uid]] = seen.get(pair_of[s.uid], 0) + 1
        complete = {p for p, n in seen.items() if n == 2}
        kept = [(s, a) for s, a in zip(samples, answers) if pair_of[s.uid] in complete]
        cut = len(seen) - len(complete)
        if cut:
            log.warning("MMVP: %d question pair(s) are incomplete among the scored samples and are left out of "
                        "the pair metric (use `harness data subset` for pair-preserving subsets)", cut)
        if not kept:
            return {"scoring": "official", "overall": dict(EMPTY), "by_category": {}, "pairs_incomplete": cut,
                    "vlmeval": {}}
        
        acc, hits = self.run_evaluate(
            [s.uid for s, _ in kept], [a for _, a in kept], model="exact_matching",
            read=read_hits)
        raw = frame_dict(acc)
        pair_hits: dict[int, list[int]] = {}
        pair_category: dict[int, str] = {}
        for sample, _ in kept:
            pair_hits.setdefault(pair_of[sample.uid], []).append(hits[int(sample.uid)])
            pair_category.setdefault(pair_of[sample.uid], sample.category or "all")
        both = {p: int(all(h)) for p, h in pair_hits.items()}
        overall = bucket(sum(both.values()), len(both))
        overall["accuracy"] = round(100.0 * raw["Overall"][0], 2)  # VLMEvalKit's pair accuracy
        overall["question_accuracy"] = round(100.0 * raw["Average"][0], 2)  # VLMEvalKit's "Average"
        counts: dict[str, list[int]] = {}
        for p, hit in both.items():
            c = counts.setdefault(pair_category[p], [0, 0])
            c[0] += hit
            c[1] += 1
        return {
            "scoring": "official",
            "unit": "question pair (both questions right)",
            "overall": overall,
            # VLMEvalKit reports no categories for MMVP: the same pair metric, counted per pair's category
            "by_category": {cat: bucket(*counts[cat]) for cat in sorted(counts)},
            "pairs_incomplete": cut,
            "vlmeval": {"dataset": self.vlmeval_name, "judge": "exact_matching", "acc": raw},
        }
