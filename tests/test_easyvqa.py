"""The easyvqa benchmark on the real easy-VQA package: counts, the answer rule, attributes, rationales,
multiple choice, the prepared layout and a run through the harness."""
from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from harness.api import DataError, decode_image
from harness.benchmarks.easyvqa import (ANSWERS, COLOURS, SHAPES, EasyVQA, _package_data, attributes_from_pixels,
                                        helper_image, yes_no_parts)
from harness.cli import main

DATA = _package_data()


def _raw(split: str) -> list:
    return json.loads((DATA / split / "questions.json").read_text())


def test_counts_and_question_types_match_the_package_files():
    for split, questions, images in (("train", 38_575, 4_000), ("test", 9_673, 1_000)):
        raw = _raw(split)
        bench = EasyVQA(None, split)
        assert len(bench) == len(raw) == questions
        assert len({t[2] for t in raw}) == images
        kinds = Counter(bench.sample(i).category for i in range(len(bench)))
        # independent count: the answer word's kind, straight from the JSON
        expected = Counter("yes/no" if a in ("yes", "no") else "shape" if a in SHAPES else "colour"
                           for _, a, _ in raw)
        assert kinds == expected
    assert Counter(a for _, a, _ in _raw("train"))["yes"] == 14_229  # the measurement
    assert set(ANSWERS) == {line.strip() for line in (DATA / "answers.txt").read_text().split()}


@pytest.mark.parametrize("answer, extracted", [
    ("no", "no"), ("No, it is not.", "no"), ("Yes. Well, no.", "no"), ("The answer is Blue.", "blue"),
    ("a triangle, not a circle", "circle"), ("bluish", "FAILED"), ("", "FAILED"), ("noone", "FAILED"),
])
def test_the_rule_takes_the_last_whole_answer_word(answer, extracted):
    bench = EasyVQA(None, "test")
    sample = bench.sample(0)
    grade = bench.grade(sample, answer)
    assert grade.extracted == extracted and grade.correct == (extracted == sample.gold)


def test_pixels_agree_with_what_the_questions_say():
    """Two independent sources of each image's shape and colour: its questions and its pixels."""
    bench = EasyVQA(None, "test")
    raw = _raw("test")
    said = {}
    for question, answer, image_id in raw:
        if answer in COLOURS and question.startswith("what color is the") and question.split()[-1][:-1] in SHAPES:
            said[image_id] = (question.split()[-1][:-1], answer)
    assert len(said) > 300
    for image_id, truth in list(said.items())[:300]:
        assert attributes_from_pixels(decode_image(str(DATA / "test" / "images" / f"{image_id}.png"))) == truth
    # every question ends up with both, whether its image's questions say them or not
    for position in range(0, len(bench), 37):
        meta = bench.sample(position).meta
        assert meta["shape"] in SHAPES and meta["colour"] in COLOURS


def test_rationales_are_three_sentences_that_lead_to_the_answer():
    bench = EasyVQA(None, "test")
    for position in range(0, len(bench), 11):
        sample = bench.sample(position)
        text, meta = sample.meta["rationale"], sample.meta
        sentences = [s for s in re.split(r"(?<=\.) ", text) if s]
        assert len(sentences) == 3 and sentences[0] == f"The image shows a {meta['colour']} {meta['shape']}."
        if sample.category == "yes/no":
            # the conclusion states the fact; the question's negation turns it into the answer
            present = sentences[2].startswith("There is a ")
            negated = " not " in f" {sample.question} " or " no " in f" {sample.question} "
            assert (present != negated) == (sample.gold == "yes"), (sample.question, text)
        else:
            assert sentences[2].endswith(f"{sample.gold}."), text


@pytest.mark.parametrize("question, attribute, negated, present", [
    ("is there a red shape?", "colour", False, True),        # image: red circle
    ("does the image not contain a blue shape?", "colour", True, False),
    ("is no circle present?", "shape", True, True),
    ("is there a triangle in the image?", "shape", False, False),
])
def test_yes_no_parts_by_hand(question, attribute, negated, present):
    assert yes_no_parts(question, "circle", "red") == (attribute, negated, present)


def test_yes_no_parts_give_the_package_answer():
    """On every yes/no test question: "yes" exactly when negated and present differ (the package's own
    answers, the image's attributes from the benchmark)."""
    bench = EasyVQA(None, "test")
    for position in range(len(bench)):
        sample = bench.sample(position)
        if sample.category == "yes/no":
            _, negated, present = yes_no_parts(sample.question, sample.meta["shape"], sample.meta["colour"])
            assert (negated != present) == (sample.gold == "yes"), sample.question


def test_multiple_choice_options_are_the_answer_words_of_the_type():
    mc, open_ = EasyVQA(None, "test_mc"), EasyVQA(None, "test")
    seen = set()
    for position in range(0, len(mc), 23):
        sample, word = mc.sample(position), open_.sample(position).gold
        assert sample.uid == open_.sample(position).uid
        assert sample.choices[ord(sample.gold) - 65] == word
        seen.add(tuple(sample.choices))
        assert mc.grade(sample, f"({sample.gold})").correct and mc.grade(sample, word).correct
        assert "Options:" in mc.format_question(sample)
    assert seen == {("yes", "no"), SHAPES, COLOURS}


def test_helper_image_isolates_and_enlarges_the_shape():
    import numpy as np

    bench = EasyVQA(None, "test")
    sample = bench.sample(0)
    original = decode_image(sample.image_refs[0])
    helper = np.asarray(bench.helper_image(sample))
    fill = np.array({"red": (255, 0, 0)}.get(sample.meta["colour"], (0, 0, 0)))
    coloured = (np.abs(helper.astype(int) - fill).sum(-1) < 30).mean()
    before = (np.abs(np.asarray(original).astype(int) - fill).sum(-1) < 30).mean()
    assert sample.meta["colour"] == "red" and coloured > 2 * before  # the same shape, larger
    pixels = np.asarray(original).reshape(-1, 3)
    values, counts = np.unique(pixels, axis=0, return_counts=True)
    background = values[counts.argmax()]
    assert not (helper.reshape(-1, 3) == background).all(-1).any()  # the background is gone...
    assert (helper[[0, 0, -1, -1], [0, -1, 0, -1]] == 255).all()  # ...replaced by white
    assert helper_image(original).size == (64, 64)


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory) -> Path:
    """A folder in the package's own layout: 40 test questions and their images."""
    root = tmp_path_factory.mktemp("evqa") / "mine"
    for split in ("train", "test"):
        triples = _raw(split)[:40]
        (root / split / "images").mkdir(parents=True)
        (root / split / "questions.json").write_text(json.dumps(triples))
        for image_id in {t[2] for t in triples}:
            shutil.copy(DATA / split / "images" / f"{image_id}.png", root / split / "images")
    return root


def test_prepared_folder_reads_as_the_raw_layout(small_raw, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(["data", "prepare", "--bench", "easyvqa", "--from", str(small_raw), "--out", str(out)]) == 0
    assert f"--data {out}" in capsys.readouterr().out
    meta = json.loads((out / "harness_prepare.json").read_text())
    assert meta["easy_vqa_version"] == "1.0" and meta["rows"] == {"train": 40, "test": 40}
    for split in ("train", "test", "test_mc"):
        raw, prepared = EasyVQA(str(small_raw), split), EasyVQA(str(out), split)
        assert raw.fingerprint() == prepared.fingerprint() and len(prepared) == 40
        for position in range(40):
            a, b = raw.sample(position), prepared.sample(position)
            assert (a.uid, a.question, a.gold, a.choices, a.category, a.meta) == \
                   (b.uid, b.question, b.gold, b.choices, b.category, b.meta)
            assert decode_image(a.image_refs[0]).tobytes() == decode_image(b.image_refs[0]).tobytes()
    assert EasyVQA(str(small_raw / "test"), "test").fingerprint() == EasyVQA(str(small_raw), "test").fingerprint()
    # a non-empty --out is refused, and so is a folder with no questions
    assert main(["data", "prepare", "--bench", "easyvqa", "--from", str(small_raw), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "prepare", "--bench", "easyvqa", "--from", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "p2")]) == 2
    assert not (tmp_path / "p2").exists()


def test_bad_data_is_one_line(small_raw, tmp_path):
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "questions.json").write_text(json.dumps([["is it red?", "maybe", 0]]))
    with pytest.raises(DataError, match="outside easy-VQA's 13 words"):
        len(EasyVQA(str(bad), "test"))
    (bad / "questions.json").write_text(json.dumps([["is it red?", "yes", 99]]))
    with pytest.raises(DataError, match="lacks 1 image"):
        EasyVQA(str(bad), "test").fingerprint()
    with pytest.raises(DataError, match="splits"):
        EasyVQA(None, "dev")


def test_run_direct_on_a_tiny_model(tiny_model_dirs, small_raw, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["run", "--method", "direct", "--bench", "easyvqa", "--model", str(tiny_model_dirs["qwen2-vl"]),
                 "--data", str(small_raw), "--limit", "12", "--max-new-tokens", "4", "--db", db, "--json",
                 "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"]["n"] == 12 and report["metrics"]["n_errors"] == 0
    assert set(report["official"]["by_category"]) <= {"yes/no", "shape", "colour"}
    assert report["official"]["overall"]["total"] == 12


def test_ivt_lr_trains_on_easyvqa_rationales(tiny_model_dirs, small_raw, tmp_path, capsys):
    from harness.data.readers import read_examples

    examples = read_examples("easyvqa", str(small_raw), "train")
    assert len(examples) == 40 and examples[0].question.startswith("Question: ")
    assert examples[0].rationale.count(". ") == 2 and examples[0].answer in ANSWERS
    out = tmp_path / "ck"
    assert main(["train", "--method", "ivt-lr", "--bench", "easyvqa", "--model", str(tiny_model_dirs["qwen2-vl"]),
                 "--data", str(small_raw), "--out", str(out), "--max-steps", "1", "--batch-size", "2",
                 "--no-progress"]) == 0
    assert "1 optimizer steps" in capsys.readouterr().out and (out / "config.json").is_file()
