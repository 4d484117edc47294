"""The interleaved-trace readers: ``zebra-cot`` on a tiny dataset in Zebra-CoT's layout (save_to_disk and
parquet), its errors, and ``easyvqa-traces`` on a slice of the real easy-VQA test split."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from harness.api import DataError, decode_image
from harness.benchmarks.easyvqa import COLOURS, SHAPES, EasyVQA, _package_data, helper_image
from harness.data.readers import read_examples
from harness.data.training import read_easyvqa


def _image(colour, size=(24, 16)):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(image).rectangle([2, 2, size[0] // 2, size[1] - 3], fill=colour)
    return image


IMAGES = {name: _image(colour) for name, colour in (
    ("p0", (200, 0, 0)), ("r0a", (0, 200, 0)), ("r0b", (0, 0, 200)), ("p1", (200, 200, 0)), ("r1", (0, 200, 200)),
    ("r2", (90, 90, 90)), ("p3", (200, 0, 200)), ("r3a", (10, 120, 40)), ("r3b", (120, 40, 10)))}

ROWS = [
    {"Question": "Which way out? <image_start>[problem_image_1]<image_end>",
     "Text Reasoning Trace": "THOUGHT 0: Trace the maze.\n<image_start>[reasoning_image_1]<image_end>\n"
                             "THOUGHT 1: Then the right branch. <image_start> [reasoning_image_2] <image_end>\n"
                             "THOUGHT 2: It exits on the left.",
     "Final Answer": " left \n", "problem_image_1": "p0", "reasoning_image_1": "r0a", "reasoning_image_2": "r0b"},
    {"Question": "<image_start>[problem_image_1]<image_end>\nHow many squares?",
     "Text Reasoning Trace": "THOUGHT 0: Count them as in [reasoning_image_1] and add one.",
     "Final Answer": "4", "problem_image_1": "p1", "reasoning_image_1": "r1", "reasoning_image_2": None},
    {"Question": "No picture here.", "Text Reasoning Trace": "THOUGHT 0: Look.\n<image_start>[reasoning_image_1]<image_end>",
     "Final Answer": "x", "problem_image_1": None, "reasoning_image_1": "r2", "reasoning_image_2": None},
    {"Question": "What moves next?",
     "Text Reasoning Trace": "THOUGHT 0: The board <image_start>[problem_image_1]<image_end> shows it.\n"
                             "<image_start>[reasoning_image_1]<image_end>",
     "Final Answer": "the knight", "problem_image_1": "p3", "reasoning_image_1": "r3a", "reasoning_image_2": "r3b"},
]


def _dataset(rows, drop=()):
    import datasets

    columns = [c for c in rows[0] if c not in drop]
    features = datasets.Features({c: datasets.Image() if "_image_" in c else datasets.Value("string") for c in columns})
    records = {c: [IMAGES[r[c]] if "_image_" in c and r[c] else r[c] for r in rows] for c in columns}
    return datasets.Dataset.from_dict(records, features=features)


@pytest.fixture(scope="module")
def zebra(tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("zebra")
    dataset = _dataset(ROWS)
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(root / "disk"))
    dataset.to_parquet(str(root / "train-00000-of-00001.parquet"))
    return root


def _pixels(ref):
    return np.asarray(decode_image(ref))


def _shape(trace):
    return [kind for kind, _ in trace]


@pytest.mark.parametrize("layout", ["disk", "train-00000-of-00001.parquet"])
def test_zebra_cot_interleaves_reasoning_images_where_the_placeholders_are(zebra, layout):
    examples = read_examples("zebra-cot", str(zebra / layout))
    assert [e.uid for e in examples] == ["zebra-0", "zebra-1", "zebra-3"]  # row 2 has no problem image

    two, bare, board = examples
    assert two.question == "Which way out?" and bare.question == "How many squares?"
    assert two.answer == "left" and board.answer == "the knight"
    assert _shape(two.trace) == ["text", "image", "text", "image", "text"]
    assert [v for k, v in two.trace if k == "text"] == ["THOUGHT 0: Trace the maze.", "THOUGHT 1: Then the right branch.",
                                                       "THOUGHT 2: It exits on the left."]
    assert two.rationale == ("THOUGHT 0: Trace the maze.\nTHOUGHT 1: Then the right branch.\n"
                             "THOUGHT 2: It exits on the left.")
    # a bare placeholder inside a sentence
    assert _shape(bare.trace) == ["text", "image", "text"]
    assert bare.rationale == "THOUGHT 0: Count them as in and add one."
    # a problem image named in the trace is no reasoning step; an unreferenced reasoning image is left out
    assert board.trace[0] == ("text", "THOUGHT 0: The board shows it.") and _shape(board.trace) == ["text", "image"]

    for example, problem, reasoning in ((two, ["p0"], ["r0a", "r0b"]), (bare, ["p1"], ["r1"]), (board, ["p3"], ["r3a"])):
        assert [np.array_equal(_pixels(r), np.asarray(IMAGES[n])) for r, n in zip(example.image_refs, problem)] == \
            [True] * len(problem) and len(example.image_refs) == len(problem)
        refs = [v for k, v in example.trace if k == "image"]
        assert len(refs) == len(reasoning)
        assert all(np.array_equal(_pixels(r), np.asarray(IMAGES[n])) for r, n in zip(refs, reasoning))
        assert all(not hasattr(r, "load") for r in [*refs, *example.image_refs])  # undecoded
        for text in [example.question, example.rationale, *(v for k, v in example.trace if k == "text")]:
            assert "image_" not in text and "<image" not in text


def test_zebra_cot_errors_name_the_problem(tmp_path):
    import datasets

    rows = [dict(ROWS[0]), dict(ROWS[1], **{"Text Reasoning Trace": "THOUGHT 0: see <image_start>[reasoning_image_2]<image_end>"})]
    datasets.DatasetDict({"train": _dataset(rows)}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"row 1 .*\[reasoning_image_2\]"):
        read_examples("zebra-cot", str(tmp_path / "bad"))

    _dataset(ROWS, drop=("Final Answer",)).to_parquet(str(tmp_path / "cols.parquet"))
    with pytest.raises(DataError, match="lacks column Final Answer"):
        read_examples("zebra-cot", str(tmp_path / "cols.parquet"))

    with pytest.raises(DataError, match=r"not found at .*nowhere.*save_to_disk"):
        read_examples("zebra-cot", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="no split 'test'"):
        read_examples("zebra-cot", str(tmp_path / "bad"), split="test")


@pytest.fixture(scope="module")
def easyvqa_slice(tmp_path_factory):
    """The real test split's first 8 images with all their questions, in the package's layout."""
    root = tmp_path_factory.mktemp("easyvqa")
    source = _package_data() / "test"
    triples = [t for t in json.loads((source / "questions.json").read_text()) if t[2] < 8]
    (root / "test" / "images").mkdir(parents=True)
    (root / "test" / "questions.json").write_text(json.dumps(triples))
    for image_id in {t[2] for t in triples}:
        shutil.copy(source / "images" / f"{image_id}.png", root / "test" / "images")
    return root


def _check_traces(examples, data, split):
    plain = read_easyvqa(data, split)[:len(examples)]
    assert [(e.uid, e.question, e.answer, e.image_refs, e.rationale) for e in examples] == \
        [(e.uid, e.question, e.answer, e.image_refs, e.rationale) for e in plain]
    kinds = set()
    for example in examples:
        assert _shape(example.trace) == ["text", "image", "text"]
        (_, asks), (_, sketch), (_, conclusion) = example.trace
        assert isinstance(sketch, bytes)
        assert np.array_equal(_pixels(sketch), np.asarray(helper_image(decode_image(example.image_refs[0]))))
        _, second, third = example.rationale.split(". ")
        assert (asks, conclusion) == (second + ".", third)
        answer = example.answer
        if answer in SHAPES or answer in COLOURS:
            kinds.add("shape" if answer in SHAPES else "colour")
            assert answer in conclusion.split()[-1]
            assert not any(word in asks for word in (*SHAPES, *COLOURS))  # nothing before the sketch leaks it
    assert kinds == {"shape", "colour"}


def test_easyvqa_traces_put_the_helper_image_between_the_question_and_the_conclusion(easyvqa_slice):
    examples = read_examples("easyvqa-traces", str(easyvqa_slice / "test"), split="test", limit=20)
    assert len(examples) == 20
    _check_traces(examples, str(easyvqa_slice / "test"), "test")


def test_easyvqa_traces_from_a_prepared_folder_use_its_helper_images(easyvqa_slice, tmp_path):
    EasyVQA.prepare_data(str(easyvqa_slice), str(tmp_path / "prepared"))
    examples = read_examples("easyvqa-traces", str(tmp_path / "prepared"), split="test")
    _check_traces(examples, str(tmp_path / "prepared"), "test")
