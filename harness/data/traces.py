"""Training data readers with interleaved reasoning traces (``TrainExample.trace``: ``("text", str)`` and
``("image", ref)`` segments in order), registered in ``harness.data.readers.READERS`` through the
``harness.readers`` entry points; what modal-mixed CoT trains on.

- ``zebra-cot``: Zebra-CoT (multimodal-reasoning-lab/Zebra-CoT), its reasoning images interleaved with
  its thoughts where the trace's placeholders put them.
- ``easyvqa-traces``: the proving ground's own traces: easy-VQA's questions, what the question asks, the
  helper image (the shape isolated and enlarged), the conclusion.

Image references stay undecoded (``datasets`` ``{"bytes", "path"}`` dicts, paths, PNG bytes): whatever
:func:`harness.api.decode_image` accepts.
"""
from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.api import BENCHMARKS, DataError
from harness.api.types import IMAGE_SUFFIXES
from harness.data.readers import TrainExample, register_reader

log = logging.getLogger("harness")

# -- zebra-cot -------------------------------------------------------------------------------------
ZEBRA_COLUMNS = ("Question", "Text Reasoning Trace", "Final Answer")
ZEBRA_LAYOUT = ("a `datasets` save_to_disk folder of multimodal-reasoning-lab/Zebra-CoT (or one of its parquet/"
                "jsonl files, or a folder of them) with columns Question, Text Reasoning Trace, Final Answer, "
                "problem_image_1..K and reasoning_image_1..M")
_IMAGE_COLUMN = re.compile(r"^(problem|reasoning)_image_(\d+)$")
# <image_start>[reasoning_image_1]<image_end>, with any whitespace inside, or a bare [reasoning_image_1].
_PLACEHOLDER = re.compile(r"(?:<image_start>\s*)?\[\s*(problem|reasoning)_image_(\d+)\s*\](?:\s*<image_end>)?",
                          re.IGNORECASE)
_PLACEHOLDER_SPACED = re.compile(r"(\s*)" + _PLACEHOLDER.pattern + r"(\s*)", re.IGNORECASE)
_SPLITS = ("train", "validation", "dev", "test")


def strip_placeholders(text: str) -> str:
    """``text`` without its image placeholders: each one and the whitespace around it becomes a newline
    when that whitespace held one (a placeholder on its own line), else a space (one inside a sentence)."""
    def gap(match: re.Match) -> str:
        return "\n" if "\n" in match.group(1) + match.group(4) else " "

    return _PLACEHOLDER_SPACED.sub(gap, text or "").strip()


def _image_ref(value: Any, folder: Path) -> Any:
    """An undecoded image reference, or None for no image (relative paths resolve from the data's folder)."""
    if value is None:
        return None
    if isinstance(value, dict):  # a datasets Image struct: bytes embedded, or only a path
        if value.get("bytes"):
            return value
        value = value.get("path")
    if isinstance(value, str):
        if not value:
            return None
        if len(value) < 4096:  # a path; longer strings are base64
            for candidate in (folder / value, Path(value)):
                if candidate.is_file():
                    return str(candidate.resolve())
            if value.lower().endswith(IMAGE_SUFFIXES):
                return str(folder / value)  # missing: decode_image says so when it is used
    return value or None


def _check_columns(columns, where: Path) -> None:
    missing = [c for c in ZEBRA_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"Zebra-CoT data {where} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                        f"expected {ZEBRA_LAYOUT}")


def _arrow_rows(folder: Path) -> Iterator[dict]:
    import datasets

    dataset = datasets.load_from_disk(str(folder))
    _check_columns(dataset.column_names, folder)
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))  # nothing decoded at read time
    yield from dataset


def _parquet_rows(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise DataError(f"Zebra-CoT data {path} is not a readable parquet file ({exc}); expected {ZEBRA_LAYOUT}") from None
    _check_columns(parquet.schema_arrow.names, path)
    for batch in parquet.iter_batches(batch_size=256):
        yield from batch.to_pylist()  # Image columns: {"bytes", "path"} structs, undecoded


def _jsonl_rows(path: Path) -> Iterator[dict]:
    with path.open() as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"Zebra-CoT data {path}: line {number} is not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"Zebra-CoT data {path}: line {number} is not a JSON object")
            _check_columns(row, f"{path} line {number}")
            yield row


def _file_rows(path: Path) -> Iterator[dict]:
    if path.suffix == ".parquet":
        return _parquet_rows(path)
    if path.suffix == ".jsonl":
        return _jsonl_rows(path)
    raise DataError(f"Zebra-CoT data {path}: expected a .parquet or .jsonl file; pass {ZEBRA_LAYOUT}")


def _zebra_sources(data: str | None, split: str) -> list[tuple[Path, Path]]:
    """(a save_to_disk folder or a file, the folder relative image paths start from), in order."""
    if not data:
        raise DataError(f"--bench zebra-cot needs --data: {ZEBRA_LAYOUT}")
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"Zebra-CoT data not found at {path}; pass {ZEBRA_LAYOUT}")
    if path.is_file():
        return [(path, path.parent)]
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise DataError(f"Zebra-CoT data {path} has no split {split!r}; available: {', '.join(splits)}")
        return [(path / split, path / split)]
    if (path / "state.json").is_file():
        return [(path, path)]  # one saved Dataset: it is the split
    found = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl") and p.is_file())
    found = [p for p in found if p.suffix == ".parquet"] or found
    if not found:
        raise DataError(f"Zebra-CoT data {path} holds no save_to_disk folder, parquet or jsonl files; "
                        f"pass {ZEBRA_LAYOUT}")
    named = {p: set(re.split(r"[^a-z0-9]+", str(p.relative_to(path)).lower())) & set(_SPLITS) for p in found}
    if any(named.values()):  # the hub's layout: <task>/train-00000-of-00005.parquet
        chosen = [p for p in found if split in named[p]]
        if not chosen:
            raise DataError(f"Zebra-CoT data {path} has no files for split {split!r}; available: "
                            f"{', '.join(sorted(set().union(*named.values())))}")
        found = chosen
    return [(p, p.parent) for p in found]


def _zebra_rows(data: str | None, split: str) -> Iterator[tuple[dict, Path]]:
    for source, folder in _zebra_sources(data, split):
        rows = _arrow_rows(source) if source.is_dir() else _file_rows(source)
        for row in rows:
            yield row, folder


@register_reader("zebra-cot")
def read_zebra_cot(data: str | None, split: str) -> list[TrainExample]:
    """Zebra-CoT: ``Question``, ``Text Reasoning Trace``, ``Final Answer`` and the image columns
    ``problem_image_1..K`` / ``reasoning_image_1..M`` (absent or None where a row has fewer), from a
    ``save_to_disk`` folder (its ``split``; one saved Dataset is the split), a parquet or jsonl file, or a
    folder of them (the hub's ``<task>/train-*.parquet``: the files whose names say ``split``).

    - question: ``Question`` without its ``<image_start>[problem_image_k]<image_end>`` placeholders;
      image_refs: the problem images in column order (rows without one are skipped, with a logged count:
      the methods here need an input image); answer: ``Final Answer`` stripped; uid: the ``id`` column,
      else ``zebra-<row index>`` (counted over the split).
    - trace: the trace's text pieces (stripped, empty ones dropped; ``THOUGHT n:`` labels kept as written)
      and ``("image", ref)`` for each ``[reasoning_image_k]`` placeholder, in order. A problem-image
      placeholder inside the trace is dropped from it: that image is already the input.
    - rationale: the trace text with every placeholder removed (the text-only CoT, ``--no-sketch``).

    Placeholders: ``<image_start>[reasoning_image_1]<image_end>`` with any whitespace around or inside,
    or a bare ``[reasoning_image_1]``. One naming an image the row lacks is a DataError; a reasoning image
    that no placeholder names is left out (counted in the log). Images stay undecoded.
    """
    examples, no_image, no_trace, unreferenced, unreferenced_rows = [], 0, 0, 0, 0
    for index, (row, folder) in enumerate(_zebra_rows(data, split)):
        uid = str(row["id"]) if row.get("id") is not None else f"zebra-{index}"
        images: dict[str, dict[int, Any]] = {"problem": {}, "reasoning": {}}
        for column, value in row.items():
            match = _IMAGE_COLUMN.match(column)
            if match:
                ref = _image_ref(value, folder)
                if ref is not None:
                    images[match.group(1)][int(match.group(2))] = ref
        question, trace_text = str(row.get("Question") or ""), str(row.get("Text Reasoning Trace") or "")
        named = set()
        for field, text in (("Question", question), ("Text Reasoning Trace", trace_text)):
            for match in _PLACEHOLDER.finditer(text):
                kind, number = match.group(1).lower(), int(match.group(2))
                if number not in images[kind]:
                    raise DataError(f"Zebra-CoT data {data}: row {index} ({uid}) names [{kind}_image_{number}] in its "
                                    f"{field} but has no {kind}_image_{number} image; fix or drop the row")
                named.add((kind, number))
        if not images["problem"]:
            no_image += 1
            continue
        rationale = strip_placeholders(trace_text)
        if not rationale:
            no_trace += 1
            continue
        trace, start = [], 0
        for match in _PLACEHOLDER.finditer(trace_text):
            if match.group(1).lower() != "reasoning":
                continue  # a problem image: the input, not a reasoning step; removed with the text below
            text = strip_placeholders(trace_text[start:match.start()])
            if text:
                trace.append(("text", text))
            trace.append(("image", images["reasoning"][int(match.group(2))]))
            start = match.end()
        text = strip_placeholders(trace_text[start:])
        if text:
            trace.append(("text", text))
        missed = [n for n in images["reasoning"] if ("reasoning", n) not in named]
        if missed:
            unreferenced += len(missed)
            unreferenced_rows += 1
        examples.append(TrainExample(uid=uid, question=strip_placeholders(question), rationale=rationale,
                                     answer=str(row.get("Final Answer") or "").strip(),
                                     image_refs=[images["problem"][n] for n in sorted(images["problem"])],
                                     trace=trace))
    if no_image:
        log.info("zebra-cot %s: skipped %d rows without a problem image", split, no_image)
    if no_trace:
        log.info("zebra-cot %s: skipped %d rows with an empty reasoning trace", split, no_trace)
    if unreferenced:
        log.info("zebra-cot %s: %d reasoning images in %d rows are named by no placeholder (left out of the traces)",
                 split, unreferenced, unreferenced_rows)
    return examples


# -- easyvqa-traces --------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=\.)\s+")


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@register_reader("easyvqa-traces")
def read_easyvqa_traces(data: str | None, split: str) -> list[TrainExample]:
    """easy-VQA with interleaved traces: question, answer, image_refs and rationale exactly as the
    ``easyvqa`` reader gives them (``split`` and ``data`` as it takes them), and trace =
    ``[("text", what the question asks), ("image", the helper image), ("text", the conclusion)]``: the
    rationale's 2nd and 3rd sentences around :func:`harness.benchmarks.easyvqa.helper_image` of the
    problem image (the shape isolated on white and enlarged; PNG bytes, so examples pickle light).

    The rationale's 1st sentence ("The image shows a red circle.") is left out of the trace on purpose:
    the sketch carries the perceptual content, and no text before it names the shape or colour.
    A rationale that is not three sentences (a prepared folder's own) has its trace built from the
    sample's shape and colour with the benchmark's :func:`~harness.benchmarks.easyvqa.rationale`.
    Helper images are computed once per image (a prepared folder's ``helper`` column is used as stored);
    reading the train split (4,000 images, 38,575 questions) takes about 20 s on a busy 2-core machine.
    """
    from harness.api import decode_image
    from harness.benchmarks.easyvqa import helper_image, rationale

    benchmark = BENCHMARKS.get("easyvqa")(data or None, split)
    helpers: dict[Any, bytes] = {}
    examples = []
    for position in range(len(benchmark)):
        sample = benchmark.sample(position)
        meta = sample.meta
        image_id = meta["image_id"]
        if image_id not in helpers:
            stored = benchmark.rows.row(position).get("helper")  # the prepared layout's column
            stored = stored.get("bytes") if isinstance(stored, dict) else stored
            helpers[image_id] = stored or _png(helper_image(decode_image(sample.image_refs[0])))
        sentences = _SENTENCE_END.split(meta["rationale"].strip())
        if len(sentences) != 3:
            sentences = _SENTENCE_END.split(rationale(sample.question, meta["answer_word"], meta["shape"],
                                                      meta["colour"]))
        trace = [("text", sentences[1]), ("image", helpers[image_id]), ("text", sentences[2])]
        examples.append(TrainExample(uid=sample.uid, question=benchmark.format_question(sample),
                                     rationale=meta["rationale"], answer=sample.gold, image_refs=sample.image_refs,
                                     trace=trace))
    return examples
