"""M3CoT's official answer-extraction rule and accuracy, overall / by domain / by topic.

The rule (``judge_answer`` in the M3CoT repository's ``utils/metric.py``, see METHODS.md) reads one
letter out of a free-form final answer:

1. if ``[Answer]`` occurs, keep only what follows its last occurrence, cut before ``[Rationale]`` or
   ``[Context]``;
2. the last parenthesised single letter, ``(b)`` → ``B``;
3. else every choice whose text occurs in the answer (case-insensitive) is a candidate;
4. else option letters ``A, B, ...`` as whole words, after replacing newlines and ``. , ! ?`` by
   spaces and splitting on single spaces;
5. else the same with lower-case letters; else ``FAILED``.

In rules 3-5 "highest position" means the candidate with the highest *choice index* (the official
code collects candidates while looping over the choices and keeps the last one), not the candidate
that occurs last in the text. Only that reading reproduces the published zero-shot accuracies
(tests/test_m3cot.py checks all of them).

Stdlib only: the leaderboard and the CLI score prediction files without importing torch or pandas.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Mapping

from harness.api.benchmark import DataError
from harness.api.scores import Bucket

LETTERS = "ABCDEF"  # M3CoT has at most 6 options; the official letter map stops at F
FAILED = "FAILED"

_PAREN_LETTER = re.compile(r"\(([A-Za-z])\)")
_WORD_BREAKS = re.compile(r"[\n.,!?]")
# the fields of one line of M3CoT's published prediction files that scoring needs
_PREDICTION_FIELDS = ("id", "answer", "choices", "domain", "topic", "messages")


def extract_choice(text: str, choices: list[str]) -> str:
    """The option letter the official M3CoT rule reads from ``text``, or ``"FAILED"``."""
    if "[Answer]" in text:
        text = text.split("[Answer]")[-1].split("[Rationale]")[0].split("[Context]")[0]

    letters = re.findall(_PAREN_LETTER, text)
    if letters:
        return letters[-1].upper()  # may name no option at all, e.g. "(z)"; it then scores wrong

    # Options beyond F have no letter in the official map; they are never candidates.
    options = list(zip(LETTERS, choices))
    lowered = text.lower()
    found = [letter for letter, choice in options if choice.lower() in lowered]
    if found:
        return found[-1]

    # split(" ") on purpose (not split()): runs of spaces give empty words, as in the official code.
    words = set(_WORD_BREAKS.sub(" ", text).split(" "))
    for case in (str.upper, str.lower):
        found = [letter for letter, _ in options if case(letter) in words]
        if found:
            return found[-1]
    return FAILED


def _bucket(correct: int, total: int) -> Bucket:
    accuracy = round(100.0 * correct / total, 2) if total else 0.0
    return {"correct": correct, "total": total, "accuracy": accuracy}


def score_records(records: Iterable[Mapping]) -> dict:
    """Accuracy (percent, 2 decimals): ``{"overall": Bucket, "by_domain": {...}, "by_topic": {...}}``.

    Each record needs ``answer`` (gold letter), ``choices``, ``domain``, ``topic`` and ``prediction``
    (the final answer text).
    """
    counts: dict[str, dict[str, list[int]]] = {"overall": {}, "by_domain": {}, "by_topic": {}}
    for record in records:
        correct = int(extract_choice(record["prediction"], record["choices"]) == record["answer"])
        for group, key in (("overall", ""), ("by_domain", record["domain"]), ("by_topic", record["topic"])):
            bucket = counts[group].setdefault(key, [0, 0])
            bucket[0] += correct
            bucket[1] += 1
    overall = counts["overall"].get("", [0, 0])
    return {
        "overall": _bucket(*overall),
        "by_domain": {key: _bucket(*counts["by_domain"][key]) for key in sorted(counts["by_domain"])},
        "by_topic": {key: _bucket(*counts["by_topic"][key]) for key in sorted(counts["by_topic"])},
    }


def _prediction_record(line: str, path: Path, number: int) -> dict:
    """One line of a prediction file as a score_records record; DataError names what is wrong."""

    def fail(problem: str) -> DataError:
        return DataError(f"{path}: line {number}: {problem}")

    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise fail(f"expected a JSON object, got {type(obj).__name__}")
    missing = [name for name in _PREDICTION_FIELDS if name not in obj]
    if missing:
        raise fail(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(f'`{m}`' for m in missing)}")
    messages, choices = obj["messages"], obj["choices"]
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], str):
        raise fail("`messages` must be a non-empty list whose last element is the answer text")
    if not isinstance(choices, list) or not all(isinstance(choice, str) for choice in choices):
        raise fail("`choices` must be a list of strings")
    for name in ("answer", "domain", "topic"):
        if not isinstance(obj[name], str):
            raise fail(f"`{name}` must be a string, got {type(obj[name]).__name__}")
    return {
        "id": obj["id"], "answer": obj["answer"], "choices": choices,
        "domain": obj["domain"], "topic": obj["topic"], "prediction": messages[-1],
    }


def read_prediction_file(path: str | Path) -> list[dict]:
    """The records of an M3CoT prediction jsonl (``id, answer, choices, domain, topic, messages``)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            # blank lines are skipped, as the official reader does
            return [_prediction_record(line, path, n) for n, line in enumerate(fh, 1) if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: prediction file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def score_file(path: str | Path) -> dict:
    """Official M3CoT accuracy of a published-format prediction file (last message = answer)."""
    return score_records(read_prediction_file(path))
