"""MMStar through VLMEvalKit's ImageMCQDataset: loading, VLMEvalKit's prompt, and judge() == evaluate().

``import vlmeval`` takes ~10 s, so one benchmark object (one import) is shared by the module.
"""
import json
import subprocess
import sys

import pandas as pd
import pytest

from harness.api import BadImage, DataError
from harness.benchmarks.mmstar import MMStar
from harness.benchmarks.vlmeval_common import lmu_data_root
from harness.testing.fixtures import MMSTAR_CATEGORIES, write_mmstar_fixture



@pytest.fixture(scope="module")
def lmu(tmp_path_factory):
    """$LMUData points at an empty temporary folder, so nothing touches ~/LMUData."""
    root = tmp_path_factory.mktemp("LMUData")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMUData", str(root))
        yield root


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    return write_mmstar_fixture(tmp_path_factory.mktemp("mmstar") / "MMStar_fixture.tsv", n=24, seed=0)


@pytest.fixture(scope="module")
def bench(lmu, tsv):
    vlmeval_before = "vlmeval" in sys.modules
    bench = MMStar(str(tsv))
    len(bench)  # builds the VLMEvalKit dataset: the one slow import of this module
    bench.imported_here = not vlmeval_before
    return bench


def tricky_answers(samples):
    """Per sample, one of the answer shapes a model produces; cycles so every kind meets many rows."""
    answers = []
    for i, sample in enumerate(samples):
        gold, wrong = sample.gold, "ABCD"[("ABCD".index(sample.gold) + 1) % 4]
        option_text = sample.choices["ABCD".index(gold)]
        kinds = [
            gold,  # plain letter
            f"The answer is ({gold})",
            option_text,  # option text only
            "",  # empty
            f"{gold} or {wrong}",  # two letters: unmatched
            wrong,
            f"I think the answer is {wrong}.",
            f"Looking at the image, the shape is {option_text}.",
            "NA",  # read back as NaN from a .tsv/.xlsx prediction file
        ]
        answers.append(kinds[i % len(kinds)])
    return answers


def test_reads_fixture_with_index_referenced_images(bench, tsv):
    raw = pd.read_csv(tsv, sep="\t")
    assert len(bench) == len(raw) == 24
    referencing = {int(r["index"]): int(r["image"]) for _, r in raw.iterrows() if len(str(r["image"])) <= 64}
    assert referencing
    for position in range(len(bench)):
        sample = bench.sample(position)
        assert sample.uid == str(raw["index"][position])
        assert sample.gold == raw["answer"][position] and sample.question == raw["question"][position]
        assert sample.choices == [raw[c][position] for c in "ABCD"]
        assert sample.category in MMSTAR_CATEGORIES
        assert sample.meta == {"l2_category": raw["l2_category"][position]}
        (image,) = sample.images()
        assert 64 <= image.width <= 96
    for index, ref in referencing.items():
        assert bench.sample(index).image_refs == bench.sample(ref).image_refs
        assert bench.sample(index).images()[0].tobytes() == bench.sample(ref).images()[0].tobytes()


def test_format_question_is_vlmevalkits_prompt(bench):
    sample = bench.sample(0)
    a, b, c, d = sample.choices
    assert bench.format_question(sample) == (
        f"Question: {sample.question}\nOptions:\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n"
        "Please select the correct answer from the options above. \n"
    )
    for position in (0, 3, 7):  # build_prompt on VLMEvalKit's own row (3 and 7 reference images)
        messages = bench.dataset.build_prompt(position)
        text = "".join(m["value"] for m in messages if m["type"] == "text")
        assert bench.format_question(bench.sample(position)) == text
    assert not (lmu_data_root() / "images").exists()  # build_prompt wrote no images


def test_judge_agrees_with_vlmeval_evaluate_on_a_prediction_file(bench, tmp_path):
    from vlmeval.smp import dump

    samples = list(bench.samples())
    answers = tricky_answers(samples)
    judged = [bench.grade(s, a) for s, a in zip(samples, answers)]
    assert {j.extracted for j in judged} >= {"", "A", "B", "C", "D"}
    assert 0 < sum(j.correct for j in judged) < len(samples)

    # The prediction file exactly as VLMEvalKit's inference writes it (default .xlsx, no image column).
    table = bench.dataset.data.drop(columns=["image"]).copy()
    table["prediction"] = answers
    pred_file = str(tmp_path / "model_MMStar.xlsx")
    dump(table, pred_file)
    acc = bench.dataset.evaluate(pred_file, model="exact_matching", nproc=1)
    assert round(acc["Overall"][0] * len(samples)) == sum(j.correct for j in judged)
    for category in MMSTAR_CATEGORIES:
        rows = [j for s, j in zip(samples, judged) if s.category == category]
        assert round(acc[category][0] * len(rows)) == sum(j.correct for j in rows)

    scored = bench.score(samples, answers)
    assert scored["overall"]["correct"] == sum(j.correct for j in judged)
    assert scored["overall"]["accuracy"] == round(100 * acc["Overall"][0], 2)


def test_score_returns_official_result(bench):
    samples = [bench.sample(p) for p in (1, 2, 5, 8, 13, 21)]  # a subset, out of category order
    answers = [s.gold if i % 2 == 0 else "" for i, s in enumerate(samples)]
    result = bench.score(samples, answers)
    json.dumps(result)
    assert result["scoring"] == "official"
    assert result["overall"] == {"correct": 3, "total": 6, "accuracy": 50.0}
    assert sum(b["total"] for b in result["by_category"].values()) == 6
    assert set(result["by_category"]) == {s.category for s in samples}
    raw = result["vlmeval"]["acc"]
    assert raw["Overall"] == [0.5] and raw["split"] == ["none"]
    assert "l2_category" not in raw  # MMStar reports the six categories only
    assert bench.score([], [])["overall"]["total"] == 0


def test_bad_image_cells_fail_only_their_sample(lmu, bench, tsv, tmp_path):
    table = pd.read_csv(tsv, sep="\t")
    marker = tmp_path / "evaluated"
    table.loc[2, "image"] = "999"  # no such row; row 3 points at row 2
    table.loc[5, "image"] = "x" * 100  # long but not base64
    table.loc[6, "image"] = f"[open({str(marker)!r}, 'w')]"  # VLMEvalKit would eval() this
    path = tmp_path / "bad.tsv"
    table.to_csv(path, sep="\t", index=False)

    broken = MMStar(str(path))
    assert len(broken) == 24
    assert not marker.exists()
    for position in (2, 3, 5, 6):
        with pytest.raises(BadImage):
            broken.sample(position).images()
    assert broken.sample(4).images()[0].size == bench.sample(4).images()[0].size


def test_default_path_never_downloads_or_checks_md5(lmu, tsv, monkeypatch):
    import vlmeval.dataset.image_base as image_base
    import vlmeval.dataset.image_mcq as image_mcq
    import vlmeval.smp.file as smp_file

    def refuse(*args, **kwargs):
        raise AssertionError("VLMEvalKit tried to download")

    monkeypatch.setattr(image_base, "download_file", refuse)
    monkeypatch.setattr(smp_file, "download_file", refuse)
    monkeypatch.setattr(image_mcq, "download_file", refuse)
    (lmu / "MMStar.tsv").write_bytes(tsv.read_bytes())  # md5 differs from the registered MMStar.tsv
    try:
        bench = MMStar()
        assert bench.path == lmu / "MMStar.tsv" and len(bench) == 24
        samples = list(bench.samples())
        assert bench.score(samples, [s.gold for s in samples])["overall"]["accuracy"] == 100.0
    finally:
        (lmu / "MMStar.tsv").unlink()


def test_vlmeval_side_effects_are_undone_and_root_matches(bench, lmu):
    import ssl

    import torch
    from vlmeval.smp import LMUDataRoot

    if bench.imported_here:
        assert torch.is_grad_enabled()
        assert ssl._create_default_https_context is not ssl._create_unverified_context
    assert lmu_data_root() == lmu and LMUDataRoot() == str(lmu)


def test_missing_file_is_one_line_naming_path_and_fix(lmu, tmp_path):
    with pytest.raises(DataError) as err:
        MMStar(str(tmp_path / "nope.tsv"))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "nope.tsv") in message
    assert "MMStar.tsv" in message and "build_dataset('MMStar')" in message and "--data" in message
    with pytest.raises(DataError, match="MMStar.tsv") as err:
        MMStar()  # $LMUData holds no MMStar.tsv
    assert str(lmu / "MMStar.tsv") in str(err.value) and "\n" not in str(err.value)


def test_missing_columns_is_one_line_naming_file_and_columns(tsv, tmp_path):
    path = tmp_path / "cols.tsv"
    pd.read_csv(tsv, sep="\t").drop(columns=["A", "category"]).to_csv(path, sep="\t", index=False)
    with pytest.raises(DataError) as err:
        MMStar(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "A, category" in message


def test_registering_benchmarks_does_not_import_vlmeval():
    code = "import sys, harness.benchmarks; assert 'vlmeval' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
