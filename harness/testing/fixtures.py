"""Small fixture data sets in the exact on-disk formats of the real benchmarks.

Every item is one coloured shape (circle, square or triangle in red, green, blue or yellow) drawn on a
plain background, with a four-option question that the image really answers ("What colour is the
shape?", "Which shape is shown?"). Everything is deterministic from ``seed``, so tests and smoke runs
can exercise the real loaders and official scorers without the hub:

- :func:`write_m3cot_fixture`: a ``datasets`` DatasetDict (``test`` and a small ``train`` split) with
  the fields of ``LightChen2333/M3CoT``, saved with ``save_to_disk``.
- :func:`write_mmstar_fixture`: a TSV in VLMEvalKit's ``MMStar.tsv`` format (base64 PNG images; some
  rows point at another row's image by its index, as VLMEvalKit allows).
- one writer per other VLMEvalKit benchmark, each in that benchmark's TSV format: MMBench (circular
  rotation groups, ``index % 1e6``), MMVP (adjacent question pairs), POPE (Yes/No over the
  adversarial / popular / random categories), ScienceQA (2-5 options, hints), MathVista
  (multiple-choice / integer / float / text answers with ``question_type``, ``answer_type``,
  ``choices``, ``precision``, ``task``, ``skills``) and MathVerse (five ``problem_version`` variants
  of each problem, ``metadata``, ``question_for_eval``).

``python -m harness.testing.fixtures --out DIR [--n N] [--seed S]`` writes them all.
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


CORNERS = {"circle": 0, "square": 4, "triangle": 3}

# MMBench: leaf abilities (`category`) under their `l2-category`.
MMBENCH_CATEGORIES = {
    "attribute_recognition": "finegrained_perception (instance-level)",
    "object_localization": "finegrained_perception (instance-level)",
    "image_scene": "coarse_perception",
    "spatial_relationship": "relation_reasoning",
}
MMBENCH_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                   "l2-category", "comment", "split")
MMVP_CATEGORIES = ("Color and Appearance", "Structural and Physical Characteristics")
MMVP_COLUMNS = ("index", "question", "A", "B", "answer", "category", "image")
POPE_CATEGORIES = ("adversarial", "popular", "random")
POPE_COLUMNS = ("index", "question", "answer", "category", "image")
SCIENCEQA_CATEGORIES = ("Colors", "Shapes", "Visual elements")
SCIENCEQA_COLUMNS = ("index", "image", "question", "hint", "A", "B", "C", "D", "E", "answer", "category", "split")
MATHVISTA_TASKS = ("figure question answering", "geometry problem solving", "math word problem")
MATHVISTA_COLUMNS = ("index", "image", "question", "answer", "answer_option", "choices", "question_type",
                     "answer_type", "precision", "unit", "task", "grade", "source", "skills")
MATHVERSE_VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only")
MATHVERSE_COLUMNS = ("index", "image", "question", "answer", "question_type", "problem_version", "metadata",
                     "query_wo", "query_cot", "question_for_eval")
MATHVERSE_SUBJECTS = {"plane geometry": ("shape", "counting"), "functions": ("coordinate",)}


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _write_tsv(records: list[dict], columns, out_path_tsv) -> Path:
    import pandas as pd

    out = Path(out_path_tsv)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pd.DataFrame(records, columns=list(columns)).to_csv(tmp, sep="\t", index=False)
    tmp.replace(out)
    return out


def write_mmbench_fixture(out_path_tsv: str | Path, n: int = 24, seed: int = 0) -> Path:
    """A TSV in the format of VLMEvalKit's ``MMBench_DEV_EN.tsv`` with circular rotation groups.

    ``n`` is the number of rows; each question appears once per option (index ``g``, ``g + 1e6``,
    ``g + 2e6``, ...) with its options rotated by one each time, as MMBench's circular evaluation
    expects; every third question has three options (three rotations). Rotations point at the first
    row's image by index. The last group may be cut short to stop at ``n`` rows only if ``n`` is
    smaller than one group; otherwise only whole groups are written.
    """
    categories = list(MMBENCH_CATEGORIES)
    records: list[dict] = []
    for group, item in enumerate(_items(max(1, n), seed)):
        options = list(item["options"])
        truth = options[LETTERS.index(item["answer"])]
        if group % 3 == 2:  # a three-option question: drop one wrong option
            options.remove(next(o for o in options if o != truth))
        if records and len(records) + len(options) > n:
            break
        category = categories[group % len(categories)]
        for k in range(len(options)):
            rotated = options[k:] + options[:k]
            records.append({
                "index": group + k * 1_000_000,
                "question": item["question"],
                "hint": "The image shows one shape on a plain background." if group % 2 else None,
                **{letter: (rotated[j] if j < len(rotated) else None) for j, letter in enumerate(LETTERS)},
                "answer": LETTERS[rotated.index(truth)],
                "category": category,
                "image": _b64(item["png"]) if k == 0 else str(group),
                "source": "fixture",
                "l2-category": MMBENCH_CATEGORIES[category],
                "comment": None,
                "split": "dev",
            })
    return _write_tsv(records, MMBENCH_COLUMNS, out_path_tsv)


def write_mmvp_fixture(out_path_tsv: str | Path, n: int = 24, seed: int = 0) -> Path:
    """A TSV in the format of VLMEvalKit's ``MMVP.tsv``: ``n // 2`` adjacent pairs of rows asking the
    same two-option question about two images that answer it differently."""
    rng = random.Random(seed)
    records = []
    for pair in range(max(1, n // 2)):
        shape = rng.choice(SHAPES)
        if pair % 2 == 0:
            first, second = rng.sample(list(COLOURS), 2)
            question, category = f"Is the {shape} {first} or {second}?", MMVP_CATEGORIES[0]
            truths = [(shape, first), (shape, second)]
            options = [first, second]
        else:
            colour = rng.choice(list(COLOURS))
            first, second = rng.sample(list(SHAPES), 2)
            question, category = f"Is the {colour} shape a {first} or a {second}?", MMVP_CATEGORIES[1]
            truths = [(first, colour), (second, colour)]
            options = [first, second]
        order = rng.sample([0, 1], 2)  # which image comes first in the pair
        for k, which in enumerate(order):
            drawn_shape, drawn_colour = truths[which]
            records.append({
                "index": 2 * pair + k,
                "question": question,
                "A": options[0],
                "B": options[1],
                "answer": "AB"[which],
                "category": category,
                "image": _b64(draw_shape(drawn_shape, drawn_colour, rng)),
            })
    return _write_tsv(records, MMVP_COLUMNS, out_path_tsv)


def write_pope_fixture(out_path_tsv: str | Path, n: int = 24, seed: int = 0) -> Path:
    """A TSV in the format of VLMEvalKit's ``POPE.tsv``: "Is there a SHAPE in the image?" with Yes/No
    answers, half each, over the categories adversarial / popular / random (some rows list two)."""
    rng = random.Random(seed)
    records = []
    drawn: list[str] = []
    for position in range(n):
        reuse = position % 5 == 4  # ask about the previous row's image, referenced by its index
        shape = drawn[-1] if reuse else rng.choice(SHAPES)
        asked = shape if position % 2 == 0 else rng.choice([s for s in SHAPE_OPTIONS if s != shape])
        category = POPE_CATEGORIES[position % 3]
        if position % 7 == 6:
            category = f"{category},{POPE_CATEGORIES[(position + 1) % 3]}"
        records.append({
            "index": position,
            "question": f"Is there a {asked} in the image?",
            "answer": "Yes" if asked == shape else "No",
            "category": category,
            "image": str(position - 1) if reuse else _b64(draw_shape(shape, rng.choice(list(COLOURS)), rng)),
        })
        drawn.append(shape)
    return _write_tsv(records, POPE_COLUMNS, out_path_tsv)


def write_scienceqa_fixture(out_path_tsv: str | Path, n: int = 24, seed: int = 0) -> Path:
    """A TSV in the format of VLMEvalKit's ``ScienceQA_VAL.tsv``: two to five options (``A``..``E``,
    empty cells beyond), a ``hint`` on some rows, the answer letter."""
    records = []
    for position, item in enumerate(_items(n, seed)):
        options = list(item["options"])
        truth = options[LETTERS.index(item["answer"])]
        keep = 2 + position % 3  # 2, 3 or 4 options
        wrong = [o for o in options if o != truth][: keep - 1]
        chosen = [o for o in options if o == truth or o in wrong]
        if position % 4 == 3:
            chosen.append("none of these")
        records.append({
            "index": position,
            "image": _b64(item["png"]),
            "question": item["question"],
            "hint": "Look at the picture." if position % 2 else None,
            **{letter: (chosen[j] if j < len(chosen) else None) for j, letter in enumerate("ABCDE")},
            "answer": "ABCDE"[chosen.index(truth)],
            "category": SCIENCEQA_CATEGORIES[position % len(SCIENCEQA_CATEGORIES)],
            "split": "val",
        })
    return _write_tsv(records, SCIENCEQA_COLUMNS, out_path_tsv)


def write_mathvista_fixture(out_path_tsv: str | Path, n: int = 24, seed: int = 0) -> Path:
    """A TSV in the format of VLMEvalKit's ``MathVista_MINI.tsv``: multiple-choice (``choices`` list,
    gold text in ``answer``, its letter in ``answer_option``), integer, float (``precision``) and text
    free-form questions, with MathVista's ``Hint:`` query in ``question``, ``task`` and ``skills``."""
    rng = random.Random(seed)
    records = []
    for position in range(n):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        kind = ("multi_choice", "integer", "float", "text")[position % 4]
        row = {"index": position, "image": _b64(draw_shape(shape, colour, rng)), "precision": None, "unit": None,
               "task": MATHVISTA_TASKS[position % len(MATHVISTA_TASKS)], "grade": "elementary school",
               "source": "fixture", "answer_option": None, "choices": None}
        if kind == "multi_choice":
            options = list(COLOURS)
            rng.shuffle(options)
            choices = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
            row.update(question="Hint: Please answer the question and provide the correct option letter, e.g., A, B, "
                                f"C, D, at the end.\nQuestion: What colour is the shape?\nChoices:\n{choices}",
                       answer=colour, answer_option=LETTERS[options.index(colour)], choices=str(options),
                       question_type="multi_choice", answer_type="text", skills=str(["scientific reasoning"]))
        elif kind == "integer":
            row.update(question="Hint: Please answer the question requiring an integer answer and provide the final "
                                "value, e.g., 1, 2, 3, at the end.\nQuestion: How many corners does the shape have?",
                       answer=str(CORNERS[shape]), question_type="free_form", answer_type="integer",
                       skills=str(["geometry reasoning", "arithmetic reasoning"]))
        elif kind == "float":
            row.update(question="Hint: Please answer the question requiring a floating-point number with one decimal "
                                "place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.\nQuestion: What "
                                "is half the number of corners of the shape?",
                       answer=f"{CORNERS[shape] / 2:.1f}", question_type="free_form", answer_type="float",
                       precision=1.0, skills=str(["arithmetic reasoning"]))
        else:
            row.update(question="Hint: Please answer the question and provide the final answer at the end.\n"
                                "Question: Which shape is drawn? Answer with one word.",
                       answer=shape, question_type="free_form", answer_type="text",
                       skills=str(["geometry reasoning"]))
        records.append(row)
    return _write_tsv(records, MATHVISTA_COLUMNS, out_path_tsv)


def write_mathverse_fixture(out_path_tsv: str | Path, n: int = 24, seed: int = 0) -> Path:
    """A TSV in the format of VLMEvalKit's ``MathVerse_MINI.tsv``: each problem in its five versions
    (``problem_version``), multi-choice (letter answer, options in the question) and free-form,
    with ``metadata`` (subject, subfield), ``query_cot`` and ``question_for_eval``."""
    rng = random.Random(seed)
    records = []
    subjects = [(s, f) for s, fs in MATHVERSE_SUBJECTS.items() for f in fs]
    problem = 0
    while len(records) < n:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        png = _b64(draw_shape(shape, colour, rng))
        subject, subfield = subjects[problem % len(subjects)]
        multi = problem % 2 == 0
        if multi:
            options = list(SHAPE_OPTIONS)
            body = "Which shape is shown?\nChoices:\n" + "\n".join(f"{LETTERS[i]}:{o}" for i, o in enumerate(options))
            answer, qtype = LETTERS[options.index(shape)], "multi-choice"
        else:
            body, answer, qtype = "How many corners does the shape have?", str(CORNERS[shape]), "free-form"
        for v, version in enumerate(MATHVERSE_VERSIONS):
            if len(records) >= n:
                break
            question = body if version != "Vision Only" else "According to the image, answer the question."
            metadata = {"split": "testmini", "source": "fixture", "subject": subject, "subfield": subfield}
            records.append({
                "index": problem * len(MATHVERSE_VERSIONS) + v,
                "image": png if v == 0 else str(problem * len(MATHVERSE_VERSIONS)),
                "question": question, "answer": answer, "question_type": qtype, "problem_version": version,
                "metadata": str(metadata), "query_wo": question,
                "query_cot": question + "\nFirst conduct reasoning, and then answer the question.",
                "question_for_eval": body,
            })
        problem += 1
    return _write_tsv(records, MATHVERSE_COLUMNS, out_path_tsv)


FIXTURE_FILES = {
    "mmstar": "MMStar_fixture.tsv", "mmbench": "MMBench_DEV_EN_fixture.tsv", "mmvp": "MMVP_fixture.tsv",
    "pope": "POPE_fixture.tsv", "scienceqa": "ScienceQA_VAL_fixture.tsv", "mathvista": "MathVista_MINI_fixture.tsv",
    "mathverse": "MathVerse_MINI_fixture.tsv",
}
TSV_WRITERS = {
    "mmstar": write_mmstar_fixture, "mmbench": write_mmbench_fixture, "mmvp": write_mmvp_fixture,
    "pope": write_pope_fixture, "scienceqa": write_scienceqa_fixture, "mathvista": write_mathvista_fixture,
    "mathverse": write_mathverse_fixture,
}


def write_all(out_dir: str | Path, n: int = 24, seed: int = 0, benches=None) -> dict[str, Path]:
    """Write every fixture (or those of ``benches``) under ``out_dir``: ``m3cot/`` and one TSV per
    VLMEvalKit benchmark, named ``{VLMEvalKit name}_fixture.tsv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = list(benches) if benches else ["m3cot", *TSV_WRITERS]
    unknown = [b for b in wanted if b != "m3cot" and b not in TSV_WRITERS]
    if unknown:
        raise ValueError(f"no fixture for {', '.join(unknown)}; fixtures exist for m3cot, {', '.join(TSV_WRITERS)}")
    written = {}
    for bench in wanted:
        if bench == "m3cot":
            written[bench] = write_m3cot_fixture(out / "m3cot", n=n, seed=seed)
        else:
            written[bench] = TSV_WRITERS[bench](out / FIXTURE_FILES[bench], n=n, seed=seed)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.testing.fixtures",
        description="Write small fixture data sets (M3CoT save_to_disk folder, VLMEvalKit TSVs).",
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
