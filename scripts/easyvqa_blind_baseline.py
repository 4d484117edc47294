#!/usr/bin/env python
"""What a model that never looks at the image can score on easy-VQA's test split.

Each test question gets the answer its exact text has most often in the train split (the overall most
frequent answer for a text never seen). It reads only the question, so any accuracy at or below this is
no evidence that a model uses the image: "is there not a red shape?" is "yes" seven times in eight.

    .venv/bin/python scripts/easyvqa_blind_baseline.py        # prints 67.0 % overall, per question type
"""
from __future__ import annotations

from collections import Counter, defaultdict

from harness.api import BENCHMARKS


def main() -> None:
    train, test = (BENCHMARKS.get("easyvqa")(split=split) for split in ("train", "test"))
    by_text: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for position in range(len(train)):
        sample = train.sample(position)
        by_text[sample.question][sample.gold] += 1
        overall[sample.gold] += 1
    right: dict[str, list[int]] = defaultdict(list)
    for position in range(len(test)):
        sample = test.sample(position)
        guess = (by_text.get(sample.question) or overall).most_common(1)[0][0]
        right[sample.category].append(int(guess == sample.gold))
        right["all"].append(int(guess == sample.gold))
    for kind, values in sorted(right.items()):
        print(f"{kind:7s} {100 * sum(values) / len(values):5.1f} %  ({len(values):,} questions)")


if __name__ == "__main__":
    main()
