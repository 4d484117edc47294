"""M3CoT: the official scoring rule against published predictions, its rules one by one, and the loader."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from harness.api import BENCHMARKS, DataError, Sample
from harness.benchmarks.m3cot import M3CoT
from harness.scoring.m3cot import FAILED, extract_choice, read_prediction_file, score_file, score_records

ZERO_SHOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "m3cot-zero-shot"

# The reference: README.md of the zero-shot predictions (accuracy under the official M3CoT rule).
# file: (correct, total, accuracy %, {domain: (correct, total)})
EXPECTED = {
    "llava-7b/ccot.jsonl": (827, 2318, 35.68, {"commonsense": (245, 455), "mathematics": (68, 241), "science": (514, 1622)}),
    "llava-7b/cot.jsonl": (829, 2318, 35.76, {"commonsense": (269, 455), "mathematics": (55, 241), "science": (505, 1622)}),
    "llava-7b/direct.jsonl": (848, 2318, 36.58, {"commonsense": (238, 455), "mathematics": (62, 241), "science": (548, 1622)}),
    "llava-7b/dsp.jsonl": (797, 2318, 34.38, {"commonsense": (249, 455), "mathematics": (65, 241), "science": (483, 1622)}),
    "instruct-blip-7b/cot.jsonl": (828, 2318, 35.72, {"commonsense": (282, 455), "mathematics": (64, 241), "science": (482, 1622)}),
    "instruct-blip-7b/direct.jsonl": (836, 2318, 36.07, {"commonsense": (263, 455), "mathematics": (82, 241), "science": (491, 1622)}),
}


# -- (a) the published zero-shot predictions --------------------------------------------------------
@pytest.mark.skipif(not ZERO_SHOT.is_dir(), reason=f"reference predictions not present at {ZERO_SHOT}")
@pytest.mark.parametrize("name", list(EXPECTED))
def test_reproduces_published_zero_shot_accuracies(name):
    correct, total, accuracy, domains = EXPECTED[name]
    result = score_file(ZERO_SHOT / name)
    assert result["overall"] == {"correct": correct, "total": total, "accuracy": accuracy}
    assert {d: (b["correct"], b["total"]) for d, b in result["by_domain"].items()} == domains
    assert sum(b["total"] for b in result["by_topic"].values()) == total
    assert sum(b["correct"] for b in result["by_topic"].values()) == correct


# -- (b) the extraction rule ----------------------------------------------------------------------
CHOICES = ["red apple", "green pear", "apple"]


def test_rule1_answer_section_cut():
    # only what follows the LAST [Answer], cut before [Rationale] / [Context]
    assert extract_choice("[Answer] (A) [Answer] (B) [Rationale] so (C)", CHOICES) == "B"
    assert extract_choice("(C) [Answer] green pear [Context] (A)", CHOICES) == "B"
    assert extract_choice("no marker here (C)", CHOICES) == "C"


def test_rule2_last_parenthesised_letter_upper_cased():
    assert extract_choice("(A) or maybe (b)", CHOICES) == "B"
    assert extract_choice("not (A) but (c).", CHOICES) == "C"
    # beats choice text, and may name no option at all (then it simply scores wrong)
    assert extract_choice("green pear, so (a)", CHOICES) == "A"
    assert extract_choice("(z)", CHOICES) == "Z"
    assert extract_choice("(AB) is not a single letter; green pear", CHOICES) == "B"


def test_rule3_highest_choice_index_not_last_in_text():
    # "red apple" contains "apple" (C): both A and C are candidates, C has the higher index
    assert extract_choice("It is a red apple.", CHOICES) == "C"
    # B occurs last in the text, but C is the candidate with the highest choice position
    assert extract_choice("APPLE first, then Green Pear", CHOICES) == "C"
    assert extract_choice("a GREEN PEAR", CHOICES) == "B"


def test_rule4_upper_case_letters_as_words():
    choices = ["one", "two", "three", "four"]
    assert extract_choice("Answer: D. Or A", choices) == "D"  # highest letter, not the last one
    assert extract_choice("B!", choices) == "B"
    assert extract_choice("so\nC?", choices) == "C"
    assert extract_choice("A:", choices) == "FAILED"  # ':' does not separate words
    assert extract_choice("E is not an option", choices) == "FAILED"  # only one letter per choice
    assert extract_choice("\tB", choices) == "FAILED"  # split on single spaces only: "\tB" is one word
    assert extract_choice("B  and  C", choices) == "C"  # runs of spaces give empty words, no harm


def test_rule5_lower_case_letters_then_failed():
    choices = ["one", "two", "three"]
    assert extract_choice("i think b, or a", choices) == "B"
    assert extract_choice("c", choices) == "C"
    assert extract_choice("B or c", choices) == "B"  # upper case wins over lower case
    assert extract_choice("no idea", choices) == FAILED
    assert extract_choice("", choices) == FAILED


def test_score_records_counts_and_rounds():
    records = [
        {"answer": "A", "choices": ["x", "y"], "domain": "science", "topic": "t1", "prediction": "(A)"},
        {"answer": "B", "choices": ["x", "y"], "domain": "science", "topic": "t1", "prediction": "(A)"},
        {"answer": "B", "choices": ["x", "y"], "domain": "science", "topic": "t2", "prediction": "y"},
        {"answer": "A", "choices": ["x", "y"], "domain": "commonsense", "topic": "t3", "prediction": "?"},
    ]
    result = score_records(records)
    assert result["overall"] == {"correct": 2, "total": 4, "accuracy": 50.0}
    assert result["by_domain"]["science"] == {"correct": 2, "total": 3, "accuracy": 66.67}
    assert result["by_domain"]["commonsense"]["accuracy"] == 0.0
    assert list(result["by_topic"]) == ["t1", "t2", "t3"]


def test_score_file_reports_malformed_lines(tmp_path):
    good = {"id": "x", "answer": "A", "choices": ["a"], "domain": "d", "topic": "t", "messages": ["q", "(A)"]}
    path = tmp_path / "pred.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({k: v for k, v in good.items() if k != "messages"}) + "\n")
    with pytest.raises(DataError, match=r"pred\.jsonl: line 3: missing field `messages`"):
        score_file(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match=r"pred\.jsonl: line 2: not valid JSON") as info:
        score_file(path)
    assert "\n" not in str(info.value)
    path.write_text(json.dumps(dict(good, messages=[])) + "\n")
    with pytest.raises(DataError, match="line 1: `messages` must be a non-empty list"):
        score_file(path)
    path.write_text(json.dumps(good) + "\n")
    assert read_prediction_file(path)[0]["prediction"] == "(A)"
    assert score_file(path)["overall"]["accuracy"] == 100.0


# -- (c) the loader ------------------------------------------------------------------------------
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _png(colour) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _rows(split="test") -> list[dict]:
    return [
        {
            "id": f"{split}-{i}", "category": "cat", "image_id": f"img{i}", "question": f"Question {i}?",
            "choices": ["yes", "no", "maybe"][: 2 + i % 2], "context": "Look closely." if i == 1 else "",
            "answer": "AB"[i % 2], "rationale": f"because {i}", "split": split,
            "domain": ["science", "commonsense", "mathematics"][i], "topic": f"topic{i}",
        }
        for i in range(3)
    ]


def _dataset(split="test", drop=()):
    import datasets

    rows = [dict(row, image={"bytes": _png(c), "path": None}) for row, c in zip(_rows(split), COLOURS)]
    rows = [{k: v for k, v in row.items() if k not in drop} for row in rows]
    features = datasets.Features({
        name: {"choices": datasets.List(datasets.Value("string")), "image": datasets.Image()}.get(
            name, datasets.Value("string"))
        for name in rows[0]
    })
    return datasets.Dataset.from_list(rows, features=features)


def _check(bench: M3CoT, split="test"):
    assert len(bench) == 3
    samples = list(bench.samples())
    assert [s.uid for s in samples] == [f"{split}-0", f"{split}-1", f"{split}-2"]
    assert [s.gold for s in samples] == ["A", "B", "A"]
    assert samples[1].choices == ["yes", "no", "maybe"] and samples[0].choices == ["yes", "no"]
    assert samples[1].context == "Look closely." and samples[0].context == ""
    assert samples[2].category == "mathematics"
    assert samples[2].meta == {"domain": "mathematics", "topic": "topic2", "image_id": "img2", "rationale": "because 2"}
    for sample, colour in zip(samples, COLOURS):
        (image,) = sample.images()
        assert image.size == (8, 6) and image.getpixel((0, 0)) == colour
    json.dumps([s.meta for s in samples])  # meta stays JSON-serialisable
    fingerprint = bench.fingerprint()
    assert len(fingerprint) == 16 and fingerprint == bench.fingerprint()
    return samples


def test_registered():
    assert BENCHMARKS.get("m3cot") is M3CoT
    assert "save_to_disk" in M3CoT.data_help


def test_save_to_disk_dataset_dict(tmp_path):
    import datasets

    datasets.DatasetDict({"train": _dataset("train"), "test": _dataset("test")}).save_to_disk(str(tmp_path / "dd"))
    _check(M3CoT(str(tmp_path / "dd")))
    _check(M3CoT(str(tmp_path / "dd"), split="train"), split="train")
    assert M3CoT(str(tmp_path / "dd")).fingerprint() != M3CoT(str(tmp_path / "dd"), "train").fingerprint()
    with pytest.raises(DataError, match=r"no split 'validation'; available splits: train, test"):
        len(M3CoT(str(tmp_path / "dd"), split="validation"))


def test_save_to_disk_dataset(tmp_path):
    _dataset().save_to_disk(str(tmp_path / "ds"))
    samples = _check(M3CoT(str(tmp_path / "ds")))
    assert isinstance(samples[0].image_refs[0], dict)  # undecoded datasets image struct


def test_parquet_file_and_folder(tmp_path):
    (tmp_path / "data").mkdir()
    _dataset().to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"), batch_size=2)
    _dataset("train").to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    bench = M3CoT(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    _check(bench)
    assert bench.sample(2).uid == "test-2" and bench.sample(0).uid == "test-0"  # random access over row groups
    folder = M3CoT(str(tmp_path))  # prefers files named after the split
    _check(folder)
    assert folder.fingerprint() == bench.fingerprint()
    _check(M3CoT(str(tmp_path), split="train"), split="train")
    with pytest.raises(DataError, match=r"no files for split 'validation'; available splits: test, train"):
        len(M3CoT(str(tmp_path), split="validation"))


def test_jsonl_with_image_paths(tmp_path):
    (tmp_path / "images").mkdir()
    rows = _rows()
    (tmp_path / "images" / "0.png").write_bytes(_png(COLOURS[0]))
    rows[0]["image"] = "images/0.png"  # relative to the jsonl's folder
    rows[1]["image"] = str(tmp_path / "1.png")  # absolute
    (tmp_path / "1.png").write_bytes(_png(COLOURS[1]))
    rows[2]["image"] = base64.b64encode(_png(COLOURS[2])).decode()
    path = tmp_path / "m3cot_test.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    _check(M3CoT(str(path)))
    _check(M3CoT(str(tmp_path)))

    rows[0]["image"] = None
    path.write_text("\n".join(json.dumps(row) for row in rows))
    assert M3CoT(str(path)).sample(0).image_refs == []


def test_missing_data_messages(tmp_path):
    with pytest.raises(DataError) as info:
        len(M3CoT(None))
    assert "pass --data DIR" in str(info.value) and "\n" not in str(info.value)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=rf"M3CoT data not found at {missing}: pass --data DIR .*save_to_disk"):
        M3CoT(str(missing)).sample(0)
    with pytest.raises(DataError, match="no save_to_disk folder, parquet or jsonl files"):
        len(M3CoT(str(tmp_path)))


def test_missing_columns_message(tmp_path):
    path = tmp_path / "test.parquet"
    _dataset(drop=("answer", "topic")).to_parquet(str(path))
    with pytest.raises(DataError, match=r"test\.parquet lacks required columns answer, topic"):
        len(M3CoT(str(path)))
    _dataset(drop=("answer",)).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match=r"ds lacks required column answer"):
        len(M3CoT(str(tmp_path / "ds")))
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text(json.dumps({"id": "x", "question": "q"}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl lacks required columns choices, answer, image, domain, topic"):
        len(M3CoT(str(jsonl)))


def test_format_judge_score():
    bench = M3CoT("unused")
    sample = Sample(uid="1", question="Which?", gold="B", choices=["cat", "dog"], context="A pet.",
                    category="commonsense", meta={"domain": "commonsense", "topic": "pets"})
    assert bench.format_question(sample) == "[Context]\nA pet.\n[Question]\nWhich?\n[Choices]\n(A) cat\n(B) dog"
    sample.context = ""
    assert bench.format_question(sample).startswith("[Question]\nWhich?\n[Choices]\n(A) cat")
    assert bench.grade(sample, "It is a dog.").extracted == "B"
    assert bench.grade(sample, "It is a dog.").correct
    assert not bench.grade(sample, "").correct
    result = bench.score([sample, sample], ["(B)", "(A)"])
    assert result["scoring"] == "official"
    assert result["overall"] == {"correct": 1, "total": 2, "accuracy": 50.0}
    assert result["by_category"] == {"commonsense": {"correct": 1, "total": 2, "accuracy": 50.0}}
    assert result["by_topic"]["pets"]["total"] == 2


def test_a_prediction_file_scores_through_the_benchmark_as_score_file_does(tmp_path):
    """`harness score m3cot` reads the file with M3CoT.read_predictions and scores it with M3CoT.score: the
    numbers are score_file's, with by_domain kept beside by_category."""
    from harness.scoring.predictions import score_predictions

    lines = [{"id": i, "answer": "AB"[i % 2], "choices": ["a cat", "a dog"], "domain": f"d{i % 3}", "topic": f"t{i % 2}",
              "messages": ["q", answer]} for i, answer in enumerate(["(A)", "a dog", "", "(B)", "B", "no idea"])]
    path = tmp_path / "pred.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    official = score_file(path)
    result = score_predictions("m3cot", path)
    assert result == {"scoring": "official", "overall": official["overall"], "by_category": official["by_domain"],
                      "by_domain": official["by_domain"], "by_topic": official["by_topic"]}
    samples, answers = M3CoT().read_predictions(path)
    assert [s.uid for s in samples] == [str(i) for i in range(6)] and answers[1] == "a dog"
