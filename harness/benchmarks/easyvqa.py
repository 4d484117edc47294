"""easy-VQA (PyPI ``easy-vqa`` 1.0, MIT): 64×64 images of one coloured shape, with questions about it.

The proving ground: real images and questions that install offline, small enough that a VLM trained
here on 2 CPU cores answers them well, so that methods can be told apart by accuracy.

- Splits: ``train`` (4,000 images, 38,575 questions), ``test`` (1,000 / 9,673) and ``test_mc`` (the
  test questions as multiple choice: the options are the answer words of the question's type).
- Categories (the per-category breakdown): ``yes/no``, ``shape``, ``colour``.
- **The rule** (open splits): the extracted answer is the *last* of the 13 answer words that occurs as
  a whole word in the answer text, case-insensitive; ``FAILED`` when none does. ``test_mc``: the
  first standalone option letter (``A``, ``(B)``), else the last option word mapped to its letter.
- Data (``--data``): a folder in the package's own layout (``questions.json`` of [question, answer,
  image_id] triples beside ``images/ID.png``; or its parent holding ``train/`` and ``test/``), or the
  ``datasets`` folder ``harness data prepare --bench easyvqa`` writes. Without ``--data``: the
  installed package's own files. The fingerprint hashes the questions and image bytes, so both layouts
  of the same data name the same runs.
- Every sample also carries what trainable methods learn from (``meta``): the image's ``shape`` and
  ``colour`` (from its questions; from the pixels where its questions do not say), a three-sentence
  ``rationale`` (what the image shows, what the question asks, the conclusion), and
  :meth:`EasyVQA.helper_image`: the shape isolated on white and enlarged (modal-mixed CoT's
  intermediate image).
"""
from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from harness.api import Benchmark, DataError, Grade, Sample, register_benchmark
from harness.api.hashing import digest_files

SHAPES = ("circle", "rectangle", "triangle")
# The generator's palette (measured: every shape is filled with exactly one of these).
PALETTE = {"green": (0, 255, 0), "red": (255, 0, 0), "gray": (128, 128, 128), "teal": (0, 128, 128),
           "black": (0, 0, 0), "yellow": (255, 255, 0), "brown": (165, 42, 42), "blue": (0, 0, 255)}
COLOURS = tuple(PALETTE)
ANSWERS = ("yes", "no", *SHAPES, *COLOURS)
OPTIONS = {"yes/no": ("yes", "no"), "shape": SHAPES, "colour": COLOURS}  # test_mc's options per type
_WORD = re.compile(r"[a-z]+")
_ANSWER_WORD = re.compile(r"\b(" + "|".join(ANSWERS) + r")\b", re.IGNORECASE)
_LETTER = re.compile(r"(?<![A-Za-z])\(?([A-H])\)?(?![A-Za-z])")
PREPARED_META = "harness_prepare.json"


def question_type(answer: str) -> str:
    return "yes/no" if answer in ("yes", "no") else "shape" if answer in SHAPES else "colour"


def _negated(words: list[str]) -> bool:
    return "not" in words or "no" in words


def attributes_from_questions(triples) -> tuple[dict[int, str], dict[int, str]]:
    """{image_id: shape}, {image_id: colour} as the questions and their answers state them.

    Open answers name the attribute ("what color is the circle?" → blue: blue, and circle); a yes/no
    question names a present attribute when its answer and its negation agree ("is there not a red
    shape?" → no: red is there).
    """
    shapes, colours = {}, {}
    for question, answer, image_id in triples:
        words = _WORD.findall(question.lower())
        named = [w for w in words if w in SHAPES or w in COLOURS]
        if answer in ("yes", "no"):
            present = named if (answer == "yes") != _negated(words) else []
        else:
            present = [answer, *named]
        for word in present:
            (shapes if word in SHAPES else colours)[image_id] = word
    return shapes, colours


def shape_mask(pixels):
    """Boolean mask of the shape: pixels far from the background (the image's most common colour)."""
    import numpy as np

    flat = pixels.reshape(-1, 3)
    values, counts = np.unique(flat, axis=0, return_counts=True)
    background = values[counts.argmax()].astype(int)
    return np.abs(pixels.astype(int) - background).sum(-1) > 90


def attributes_from_pixels(image) -> tuple[str, str]:
    """(shape, colour) read off the pixels: the fill is exactly a palette colour; the share of the
    bounding box the shape covers tells the shape (rectangle ≈ 1, circle ≈ π/4, triangle ≈ 1/2)."""
    import numpy as np

    pixels = np.asarray(image.convert("RGB"))
    mask = shape_mask(pixels)
    if not mask.any():
        raise DataError("easy-VQA image with no shape on it (every pixel is background)")
    values, counts = np.unique(pixels[mask], axis=0, return_counts=True)
    fill = values[counts.argmax()].astype(int)
    colour = min(PALETTE, key=lambda name: int(np.abs(fill - np.array(PALETTE[name])).sum()))
    rows, cols = np.nonzero(mask)
    cover = mask.sum() / ((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1))
    shape = "rectangle" if cover > 0.9 else "triangle" if cover < 0.7 else "circle"
    return shape, colour


def helper_image(image, size: int = 64):
    """The shape cut out of its background onto white and enlarged to fill ``size``×``size``."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image.convert("RGB"))
    mask = shape_mask(pixels)
    out = np.full_like(pixels, 255)
    out[mask] = pixels[mask]
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return Image.fromarray(out).resize((size, size))
    margin = 2
    box = (max(int(cols.min()) - margin, 0), max(int(rows.min()) - margin, 0),
           min(int(cols.max()) + margin + 1, pixels.shape[1]), min(int(rows.max()) + margin + 1, pixels.shape[0]))
    return Image.fromarray(out).crop(box).resize((size, size), Image.NEAREST)


def yes_no_parts(question: str, shape: str, colour: str) -> tuple[str, bool, bool]:
    """(the attribute the question names: "shape" or "colour", negated?, is the named value the image's?)
    of a yes/no question about an image of this shape and colour: "yes" exactly when the last two differ."""
    words = _WORD.findall(question.lower())
    named = next((w for w in words if w in SHAPES or w in COLOURS), None)
    return ("colour" if named in COLOURS else "shape"), _negated(words), named in (shape, colour)


def rationale(question: str, answer: str, shape: str, colour: str) -> str:
    """Three sentences: what the image shows, what the question asks, the conclusion (the answer word
    itself is left to the answer line, "The answer is ...")."""
    words = _WORD.findall(question.lower())
    seen = f"The image shows a {colour} {shape}."
    kind = question_type(answer)
    if kind == "shape":
        return f"{seen} The question asks which shape it is. The shape is a {shape}."
    if kind == "colour":
        return f"{seen} The question asks for its colour. The {shape} is {colour}."
    named = next((w for w in words if w in SHAPES or w in COLOURS), None)
    thing = f"{named} shape" if named in COLOURS else named or "shape"
    _, negated, there = yes_no_parts(question, shape, colour)
    asks = "does not contain" if negated else "contains"
    fact = f"There is a {thing}." if there else f"There is no {thing}."
    return f"{seen} The question asks whether the image {asks} a {thing}. {fact}"


def _package_data() -> Path:
    try:
        import easy_vqa
    except ImportError:
        raise DataError("easyvqa needs the easy-vqa package (pip install easy-vqa==1.0), or --data DIR with "
                        "questions.json and images/") from None
    return Path(easy_vqa.__file__).resolve().parent / "data"


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("easy-vqa")
    except PackageNotFoundError:
        return ""


class _RawRows:
    """The package's own layout: ``questions.json`` + ``images/ID.png``."""

    def __init__(self, folder: Path):
        self.folder = folder
        try:
            triples = json.loads((folder / "questions.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{folder / 'questions.json'} is not readable JSON ({exc}); expected a list of "
                            "[question, answer, image_id] triples") from None
        if not isinstance(triples, list) or not all(
                isinstance(t, list) and len(t) == 3 and isinstance(t[0], str) and isinstance(t[1], str)
                and isinstance(t[2], int) and not isinstance(t[2], bool) for t in triples):
            raise DataError(f"{folder / 'questions.json'} must be a list of [question, answer, image_id] triples "
                            "(strings, strings, integers)")
        unknown = sorted({t[1] for t in triples} - set(ANSWERS))
        if unknown:
            raise DataError(f"{folder / 'questions.json'} has answers outside easy-VQA's 13 words: "
                            f"{', '.join(unknown[:5])}")
        self.triples = triples
        self.shapes, self.colours = attributes_from_questions(triples)

    def __len__(self) -> int:
        return len(self.triples)

    def image_path(self, image_id: int) -> Path:
        return self.folder / "images" / f"{image_id}.png"

    def row(self, index: int) -> dict:
        question, answer, image_id = self.triples[index]
        path = self.image_path(image_id)
        shape, colour = self.shapes.get(image_id), self.colours.get(image_id)
        if shape is None or colour is None:
            from harness.api import decode_image

            seen_shape, seen_colour = attributes_from_pixels(decode_image(str(path)))
            shape, colour = shape or seen_shape, colour or seen_colour
            self.shapes[image_id], self.colours[image_id] = shape, colour  # once per image
        return {"question": question, "answer": answer, "image_id": image_id, "image": str(path),
                "shape": shape, "colour": colour}

    def fingerprint(self) -> str:
        ids = sorted({t[2] for t in self.triples})
        missing = [i for i in ids if not self.image_path(i).is_file()]
        if missing:
            raise DataError(f"{self.folder / 'images'} lacks {len(missing)} image(s) the questions refer to, "
                            f"e.g. {missing[0]}.png")
        return "sha256:" + digest_files([self.folder / "questions.json", *map(self.image_path, ids)],
                                        sampled=False).hexdigest()[:16]


class _PreparedRows:
    """The ``datasets`` folder ``harness data prepare --bench easyvqa`` writes."""

    def __init__(self, folder: Path, split: str):
        import datasets

        meta = json.loads((folder / PREPARED_META).read_text())
        stored = datasets.load_from_disk(str(folder))
        if split not in stored:
            raise DataError(f"{folder} has splits {', '.join(stored)}, not {split}")
        self.table = (stored[split].cast_column("image", datasets.Image(decode=False))
                      .cast_column("helper", datasets.Image(decode=False)))
        self._fingerprint = meta["fingerprints"][split]

    def __len__(self) -> int:
        return len(self.table)

    def row(self, index: int) -> dict:
        return dict(self.table[index])

    def fingerprint(self) -> str:
        return self._fingerprint


@register_benchmark("easyvqa")
class EasyVQA(Benchmark):
    description = ("easy-VQA (PyPI easy-vqa): 64x64 coloured shapes, open yes/no, shape and colour questions "
                   "(--split test_mc: as multiple choice); the last answer word in the answer is scored")
    split = "test"
    splits: ClassVar[tuple[str, ...]] = ("train", "test", "test_mc")
    data_help = ("a folder with questions.json and images/ (the easy-vqa package's layout, or its data/ folder "
                 "with train/ and test/), or `harness data prepare --bench easyvqa --out DIR`; default: the "
                 "installed easy-vqa package")

    def __init__(self, data: str | None = None, split: str | None = None):
        super().__init__(data, split)
        if self.split not in self.splits:
            raise DataError(f"easyvqa has splits {', '.join(self.splits)}, not {self.split!r}")
        self.source_split = "test" if self.split == "test_mc" else self.split
        self.multiple_choice = self.split == "test_mc"

    @cached_property
    def rows(self):
        root = Path(self.data).expanduser() if self.data else _package_data()
        if (root / PREPARED_META).is_file():
            return _PreparedRows(root, self.source_split)
        for folder in (root / self.source_split, root):
            if (folder / "questions.json").is_file():
                return _RawRows(folder)
        if not root.exists():
            raise DataError(f"easyvqa data {root} does not exist; pass {self.data_help}")
        raise DataError(f"{root} holds no questions.json (nor {self.source_split}/questions.json) and is no "
                        f"prepared folder; pass {self.data_help}")

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, position: int) -> Sample:
        row = self.rows.row(position)
        kind = question_type(row["answer"])
        choices, gold = [], row["answer"]
        if self.multiple_choice:
            choices = list(OPTIONS[kind])
            gold = chr(65 + choices.index(row["answer"]))
        reasoning = row.get("rationale") or rationale(row["question"], row["answer"], row["shape"], row["colour"])
        return Sample(uid=f"{self.source_split}-{position}", question=row["question"], gold=gold, choices=choices,
                      image_refs=[row["image"]], category=kind,
                      meta={"image_id": row["image_id"], "shape": row["shape"], "colour": row["colour"],
                            "answer_word": row["answer"], "rationale": reasoning})

    def helper_image(self, sample: Sample):
        """Modal-mixed CoT's intermediate image for ``sample``: its shape isolated and enlarged."""
        from harness.api import decode_image

        return helper_image(decode_image(sample.image_refs[0]))

    def fingerprint(self) -> str:
        return self.rows.fingerprint()

    def grade(self, sample: Sample, answer: str) -> Grade:
        if self.multiple_choice:
            extracted = self._letter(sample, answer)
        else:
            words = _ANSWER_WORD.findall(answer or "")
            extracted = words[-1].lower() if words else "FAILED"
        return Grade(extracted=extracted, correct=extracted == sample.gold)

    @staticmethod
    def _letter(sample: Sample, answer: str) -> str:
        letters = {chr(65 + i) for i in range(len(sample.choices))}
        for match in _LETTER.finditer(answer or ""):
            if match.group(1) in letters:
                return match.group(1)
        words = [w.lower() for w in _ANSWER_WORD.findall(answer or "") if w.lower() in sample.choices]
        return chr(65 + sample.choices.index(words[-1])) if words else "FAILED"

    @staticmethod
    def prepare_data(source: str | None, out: str) -> str:
        """Write easy-VQA (the package's files, or a folder in its layout) as a ``datasets`` folder at ``out``
        with rationales and helper images, the package version and the content hash of each split."""
        import io
        import os
        import shutil
        import tempfile

        import datasets

        from harness.api import decode_image

        root = Path(source).expanduser() if source else _package_data()
        target = Path(out).expanduser()
        if target.exists() and any(target.iterdir()):
            raise DataError(f"--out {target} is not empty; pass a new or empty folder (nothing was overwritten)")
        splits, fingerprints = {}, {}
        for split in ("train", "test"):
            folder = root / split
            if not (folder / "questions.json").is_file():
                continue
            bench = EasyVQA(str(folder), split)
            fingerprints[split] = bench.fingerprint()
            records = {k: [] for k in ("question", "answer", "image_id", "image", "shape", "colour", "category",
                                       "rationale", "helper")}
            helpers: dict[int, bytes] = {}
            for position in range(len(bench)):
                sample = bench.sample(position)
                image_id = sample.meta["image_id"]
                if image_id not in helpers:
                    buffer = io.BytesIO()
                    helper_image(decode_image(sample.image_refs[0])).save(buffer, format="PNG")
                    helpers[image_id] = buffer.getvalue()
                for key, value in (("question", sample.question), ("answer", sample.meta["answer_word"]),
                                   ("image_id", image_id), ("shape", sample.meta["shape"]),
                                   ("colour", sample.meta["colour"]), ("category", sample.category),
                                   ("rationale", sample.meta["rationale"])):
                    records[key].append(value)
                records["image"].append({"bytes": Path(sample.image_refs[0]).read_bytes(), "path": None})
                records["helper"].append({"bytes": helpers[image_id], "path": None})
            features = datasets.Features({k: datasets.Value("int64" if k == "image_id" else "string")
                                          for k in records if k not in ("image", "helper")}
                                         | {"image": datasets.Image(), "helper": datasets.Image()})
            splits[split] = datasets.Dataset.from_dict(records, features=features)
        if not splits:
            raise DataError(f"{root} has neither train/questions.json nor test/questions.json (the easy-vqa "
                            "package's data/ layout)")
        staging = Path(tempfile.mkdtemp(prefix=".easyvqa-", dir=target.parent if target.parent.exists() else None))
        try:
            datasets.DatasetDict(splits).save_to_disk(str(staging / "data"))
            (staging / "data" / PREPARED_META).write_text(json.dumps(
                {"source": str(root), "easy_vqa_version": package_version(), "fingerprints": fingerprints,
                 "rows": {k: len(v) for k, v in splits.items()}}, indent=2))
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.rmdir()
            os.replace(staging / "data", target)  # complete or absent: never half-written
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        counts = ", ".join(f"{k} {len(v):,} questions" for k, v in splits.items())
        return f"easyvqa: wrote {target} ({counts}; easy-vqa {package_version() or 'unknown version'}); pass --data {target}"
