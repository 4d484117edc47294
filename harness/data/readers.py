"""Training data readers: the ``READERS`` registry (entry-point group ``harness.readers``).

A reader is a function ``read(data: str, split: str) -> list[TrainExample]``, registered with
``@register_reader("name")`` in a module that the entry-point group declares (the built-in ``m3cot``
and ``scienceqa`` readers live in :mod:`harness.data.training`). A recipe names the readers it trains
on in ``Recipe.benches``. Stdlib only: nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from harness.api import DataError
from harness.api.registry import Registry


@dataclass
class TrainExample:
    uid: str
    question: str  # formatted by the benchmark's format_question (the prompt the method sees at evaluation)
    rationale: str
    answer: str  # the gold answer as the benchmark grades it (an option letter; easyvqa's open split: the word)
    image_refs: list = field(default_factory=list)
    # An interleaved reasoning trace (modal-mixed CoT): ("text", str) and ("image", ref) segments in
    # order, the images being intermediate (reasoning) images, not the problem's; empty for text-only data.
    trace: list = field(default_factory=list)
    # The raw parts, for methods whose published prompt is built from them (as ``Query.stem`` and
    # ``Query.choices``): the sample's own question (no context, no options; None: the reader does not
    # know it) and its option texts.
    stem: str | None = None
    choices: list = field(default_factory=list)


Reader = Callable[[str, str], list[TrainExample]]
READERS: Registry[Reader] = Registry("training data reader", "harness.readers")
register_reader = READERS.register


def read_examples(bench: str, data: str, split: str = "train", limit: int | None = None) -> list[TrainExample]:
    """The examples of reader ``bench`` from ``data`` (first ``limit``); none at all is an error."""
    if bench not in READERS:
        raise ValueError(f"no training data reader for {bench!r}; available: {', '.join(READERS.names())}")
    examples = READERS.get(bench)(data, split)
    if not examples:
        raise DataError(f"no {bench} training examples with an image and a rationale in {data} (split {split})")
    return examples[:limit] if limit else examples
