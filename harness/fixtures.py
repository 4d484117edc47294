"""Small fixture data sets in the exact on-disk formats of the real benchmarks.

Every item is one coloured shape (circle, square or triangle in red, green, blue or yellow) drawn on a
plain background, with a four-option question that the image really answers ("What colour is the
shape?", "Which shape is shown?"). Everything is deterministic from ``seed``, so tests and smoke runs
can exercise the real loaders and official scorers without the hub:

- :func:`write_m3cot_fixture`: a ``datasets`` DatasetDict (``test`` and a small ``train`` split) with
  the fields of ``LightChen2333/M3CoT``, saved with ``save_to_disk``.
- :func:`write_mmstar_fixture`: a TSV in VLMEvalKit's ``MMStar.tsv`` format (base64 PNG images; some
  rows point at another row's image by its index, as VLMEvalKit allows).

``python -m harness.fixtures --out DIR [--n N] [--seed S]`` writes both.
"""
from __future__ import annotations

import argparse
import base64
import io
import random
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 70, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
SHAPE_OPTIONS = ("circle", "square", "triangle", "star")  # "star" is never drawn: a pure distractor
BACKGROUNDS = ((255, 255, 255), (235, 235, 235), (245, 240, 225), (225, 235, 245))
SIZES = (64, 72, 80, 88, 96)

# MMStar's six core capabilities and their 18 fine-grained dimensions (values of `category` / `l2_category`).
MMSTAR_CATEGORIES = {
    "coarse perception": ("image scene and topic", "image style & quality", "image emotion"),
    "fine-grained perception": ("object counting", "recognition", "localization"),
    "instance reasoning": (
        "single-instance reasoning", "cross-instance attribute reasoning", "cross-instance relation reasoning",
    ),
    "logical reasoning": ("code & sequence reasoning", "diagram reasoning", "common reasoning"),
    "math": ("geometry", "numeric commonsense and calculation", "statistical reasoning"),
    "science & technology": (
        "biology & chemistry & physics", "electronics & energy & mechanical eng.",
        "geography & earth science & agriculture",
    ),
}
MMSTAR_COLUMNS = ("index", "question", "answer", "A", "B", "C", "D", "category", "l2_category", "image")

# M3CoT's domains and the topics under each (values of `domain` / `topic`).
M3COT_TOPICS = {
    "science": ("natural-science", "social-science", "language-science"),
    "commonsense": ("physical-commonsense", "social-commonsense", "temporal-commonsense"),
    "mathematics": ("algebra", "geometry", "theory"),
}
M3COT_FIELDS = (
    "id", "category", "image_id", "question", "choices", "context", "answer", "rationale", "split",
    "image", "domain", "topic",
)
LETTERS = "ABCD"


def draw_shape(shape: str, colour: str, rng: random.Random) -> bytes:
    """PNG bytes of one ``colour`` ``shape`` on a plain background; size and placement from ``rng``."""
    from PIL import Image, ImageDraw

    size = rng.choice(SIZES)
    image = Image.new("RGB", (size, size), rng.choice(BACKGROUNDS))
    extent = rng.randint(int(size * 0.5), int(size * 0.75))
    x0 = rng.randint(4, size - extent - 4)
    y0 = rng.randint(4, size - extent - 4)
    x1, y1 = x0 + extent, y0 + extent
    draw = ImageDraw.Draw(image)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _question(kind: str, shape: str, colour: str, rng: random.Random) -> dict:
    """A four-option question about the drawn shape, the options shuffled, the gold as a letter."""
    if kind == "colour":
        question, options, truth = "What colour is the shape?", list(COLOURS), colour
    else:
        question, options, truth = "Which shape is shown?", list(SHAPE_OPTIONS), shape
    rng.shuffle(options)
    letter = LETTERS[options.index(truth)]
    rationale = (
        f"The image shows a single {colour} {shape} on a plain background, so the answer is "
        f"({letter}) {truth}."
    )
    return {"kind": kind, "question": question, "options": options, "answer": letter, "rationale": rationale}


def _items(n: int, seed: int, reuse_every: int = 0) -> list[dict]:
    """``n`` fixture items. With ``reuse_every=k``, every k-th item asks the other question about the
    previous item's image (``reuses`` holds that item's position)."""
    rng = random.Random(seed)
    items: list[dict] = []
    for position in range(n):
        if reuse_every and position % reuse_every == reuse_every - 1 and items:
            previous = items[-1]
            kind = "shape" if previous["kind"] == "colour" else "colour"
            item = _question(kind, previous["shape"], previous["colour"], rng)
            item.update(shape=previous["shape"], colour=previous["colour"], png=previous["png"],
                        reuses=position - 1)
        else:
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            item = _question(rng.choice(("colour", "shape")), shape, colour, rng)
            item.update(shape=shape, colour=colour, png=draw_shape(shape, colour, rng), reuses=None)
        items.append(item)
    return items


def _m3cot_rows(n: int, seed: int, split: str) -> list[dict]:
    domains = list(M3COT_TOPICS)
    rows = []
    for position, item in enumerate(_items(n, seed)):
        domain = domains[position % len(domains)]
        topics = M3COT_TOPICS[domain]
        topic = topics[(position // len(domains)) % len(topics)]
        uid = f"{topic}-{split}-{position}"
        rows.append({
            "id": uid,
            "category": f"{item['kind']}-recognition",
            "image_id": f"fixture-{split}-{position}",
            "question": item["question"],
            "choices": item["options"],
            "context": "" if position % 2 else "The image shows one shape on a plain background.",
            "answer": item["answer"],
            "rationale": item["rationale"],
            "split": split,
            "image": {"bytes": item["png"], "path": None},
            "domain": domain,
            "topic": topic,
        })
    return rows


def write_m3cot_fixture(out_dir: str | Path, n: int = 24, seed: int = 0) -> Path:
    """Write an M3CoT-format DatasetDict (``test``: ``n`` rows, ``train``: a few) with ``save_to_disk``."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("string"),
        "category": datasets.Value("string"),
        "image_id": datasets.Value("string"),
        "question": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "context": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "rationale": datasets.Value("string"),
        "split": datasets.Value("string"),
        "image": datasets.Image(),
        "domain": datasets.Value("string"),
        "topic": datasets.Value("string"),
    })
    splits = {"test": (n, seed), "train": (max(3, n // 4), seed + 1)}
    dataset = datasets.DatasetDict({
        split: datasets.Dataset.from_list(_m3cot_rows(size, split_seed, split), features=features)
        for split, (size, split_seed) in splits.items()
    })
    out = Path(out_dir)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a few rows: the "Saving the dataset" bars are only noise
    try:
        dataset.save_to_disk(str(out))
    finally:
        if bars:
            datasets.enable_progress_bars()
    return out


def write_mmstar_fixture(out_path_tsv: str | Path, n: int = 24, seed: int = 0) -> Path:
    """Write a TSV in the format of VLMEvalKit's ``MMStar.tsv``.

    Every fourth row asks about the previous row's image and stores that row's index in ``image``
    instead of the base64 PNG, as VLMEvalKit's TSVs do to save space.
    """
    import pandas as pd

    categories = list(MMSTAR_CATEGORIES)
    records = []
    for position, item in enumerate(_items(n, seed, reuse_every=4)):
        category = categories[position % len(categories)]
        l2_options = MMSTAR_CATEGORIES[category]
        image = (
            str(item["reuses"]) if item["reuses"] is not None
            else base64.b64encode(item["png"]).decode("ascii")
        )
        records.append({
            "index": position,
            "question": item["question"],
            "answer": item["answer"],
            **dict(zip(LETTERS, item["options"])),
            "category": category,
            "l2_category": l2_options[(position // len(categories)) % len(l2_options)],
            "image": image,
        })
    out = Path(out_path_tsv)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records, columns=list(MMSTAR_COLUMNS)).to_csv(out, sep="\t", index=False)
    return out


def write_all(out_dir: str | Path, n: int = 24, seed: int = 0) -> dict[str, Path]:
    """Write every fixture under ``out_dir``: ``m3cot/`` and ``MMStar_fixture.tsv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "m3cot": write_m3cot_fixture(out / "m3cot", n=n, seed=seed),
        "mmstar": write_mmstar_fixture(out / "MMStar_fixture.tsv", n=n, seed=seed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.fixtures",
        description="Write small fixture data sets (M3CoT save_to_disk folder, VLMEvalKit MMStar TSV).",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=24, help="items per test set (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    for name, path in write_all(args.out, n=args.n, seed=args.seed).items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
