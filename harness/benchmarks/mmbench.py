"""MMBench (VLMEvalKit ``MMBench_DEV_EN`` / ``MMBench_DEV_EN_V11``), scored *circularly*.

VLMEvalKit scores every dataset whose name contains "mmbench" with circular evaluation: rows whose
``index % 1e6`` agree are the same question with its options rotated, and a question counts as
correct only if every rotation is answered correctly (``mcq_circular_eval``). The official number is
the fraction of rotation groups passed, overall and per ``category`` / ``l2-category``.

A subset must therefore keep whole groups (:meth:`MMBench.units` are the groups): :meth:`MMBench.score`
scores only the groups whose every rotation is among the given samples and reports how many were left
out (``harness data subset`` writes group-preserving subsets; a plain ``--limit`` can cut groups).
"""
from __future__ import annotations

import logging

from harness.api import Sample, register_benchmark
from harness.api.benchmark import Judge
from harness.api.scores import ScoreResult

from harness.benchmarks.vlmeval_common import EMPTY, read_hits, VLMEvalMCQBenchmark, bucket, frame_dict

log = logging.getLogger(__name__)
GROUP = 1_000_000  # VLMEvalKit: g_index = int(index % 1e6)


def group_of(index) -> int:
    return int(int(index) % GROUP)


@register_benchmark("mmbench")
class MMBench(VLMEvalMCQBenchmark):
    description = (
        "MMBench (VLMEvalKit MMBench_DEV_EN; --split dev_en_v11 for MMBench_DEV_EN_V11) via ImageMCQDataset; "
        "official circular exact-matching evaluation (rotation groups)"
    )
    label = "MMBench"
    variants = {"dev_en": "MMBench_DEV_EN", "dev_en_v11": "MMBench_DEV_EN_V11"}
    required_columns = ("index", "question", "answer", "A", "B", "category", "image")
    official_columns = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                        "l2-category", "comment", "split")
    meta_columns = ("l2-category", "source", "split")
    confusable = ("mmstar",)
    units_label = "rotation groups"

    def sample(self, position: int) -> Sample:
        sample = super().sample(position)
        sample.meta["group"] = group_of(sample.uid)
        return sample

    def groups(self) -> dict[int, list[str]]:
        """Rotation group → the uids of all its rows in the data."""
        out: dict[int, list[str]] = {}
        for index in self.dataset.data["index"]:
            out.setdefault(group_of(index), []).append(str(index))
        return out

    def units(self) -> list[list[int]]:
        """The rotation groups, as positions (a question and its rotated copies stay together)."""
        return [[self._positions[uid] for uid in uids] for uids in self.groups().values()]

    def score(self, samples: list[Sample], answers: list[str], judge: Judge | None = None) -> ScoreResult:
        samples, answers = list(samples), list(answers)
        self.check_samples(samples, answers)
        given = {s.uid for s in samples}
        complete = {g for g, uids in self.groups().items() if set(uids) <= given and str(g) in given}
        kept = [(s, a) for s, a in zip(samples, answers) if group_of(s.uid) in complete]
        cut = len({group_of(s.uid) for s in samples} - complete)
        if cut:
            log.warning("MMBench: %d rotation group(s) are incomplete among the scored samples and are left out "
                        "of the circular score (use `harness data subset` for group-preserving subsets)", cut)
        if not kept:
            return {"scoring": "official", "overall": dict(EMPTY), "by_category": {}, "groups_incomplete": cut,
                    "vlmeval": {}}
        
        acc, hits = self.run_evaluate(
            [s.uid for s, _ in kept], [a for _, a in kept], model="exact_matching",
            read=read_hits)
        raw = frame_dict(acc)
        mains = [s for s, _ in kept if int(s.uid) == group_of(s.uid)]  # the group's row 0 names it
        counts: dict[str, list[int]] = {}
        overall = [0, 0]
        for sample in mains:
            hit = hits[int(sample.uid)]
            for b in (overall, counts.setdefault(sample.category, [0, 0])):
                b[0] += hit
                b[1] += 1
        result = bucket(*overall)
        if len(acc) == 1 and raw.get("Overall", [None])[0] is not None:
            result["accuracy"] = round(100.0 * raw["Overall"][0], 2)
        return {
            "scoring": "official",
            "unit": "rotation group (circular evaluation)",
            "overall": result,
            "by_category": {cat: bucket(*counts[cat]) for cat in sorted(counts)},
            "groups_incomplete": cut,
            "vlmeval": {"dataset": self.vlmeval_name, "judge": "exact_matching", "circular": True, "acc": raw},
        }
