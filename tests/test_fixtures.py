"""The fixture writers: exact official formats, deterministic, and really answerable from the image."""
import base64
import io
from collections import Counter

import pytest

from harness.testing.fixtures import (COLOURS, M3COT_FIELDS, M3COT_TOPICS, MMSTAR_CATEGORIES, MMSTAR_COLUMNS,
                              main, write_all, write_m3cot_fixture, write_mmstar_fixture)


def shape_and_colour(image):
    """What a viewer sees: the drawn colour (nearest palette entry) and the shape from its fill ratio."""
    image = image.convert("RGB")
    background = image.getpixel((0, 0))  # shapes keep a margin of 4 px
    pixels = [(x, y) for y in range(image.height) for x in range(image.width)
              if image.getpixel((x, y)) != background]
    shade = Counter(image.getpixel(p) for p in pixels).most_common(1)[0][0]
    colour = min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOURS[c], shade)))
    xs, ys = [p[0] for p in pixels], [p[1] for p in pixels]
    fill = len(pixels) / ((max(xs) - min(xs) + 1) * (max(ys) - min(ys) + 1))
    shape = "square" if fill > 0.95 else "circle" if fill > 0.65 else "triangle"
    return shape, colour


def assert_answerable(image, question, options, answer):
    shape, colour = shape_and_colour(image)
    truth = colour if "colour" in question else shape
    assert options["ABCD".index(answer)] == truth, (question, options, answer, shape, colour)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("fixtures"), n=24, seed=0)


def test_m3cot_fixture_is_an_m3cot_datasetdict(written):
    import datasets

    data = datasets.load_from_disk(str(written["m3cot"]))
    assert isinstance(data, datasets.DatasetDict) and set(data) == {"test", "train"}
    test = data["test"]
    assert len(test) == 24 and 0 < len(data["train"]) < 24
    assert tuple(test.column_names) == M3COT_FIELDS
    assert isinstance(test.features["image"], datasets.Image)
    assert {row["domain"] for row in test} == set(M3COT_TOPICS)
    assert len({row["id"] for row in test}) == 24
    for row in test:
        assert row["topic"] in M3COT_TOPICS[row["domain"]]
        assert row["split"] == "test" and len(row["choices"]) == 4 and row["answer"] in "ABCD"
        assert 64 <= row["image"].width <= 96
        assert f"({row['answer']})" in row["rationale"]
        assert_answerable(row["image"], row["question"], row["choices"], row["answer"])


def test_m3cot_benchmark_reads_the_fixture(written):
    from harness.api import BENCHMARKS

    bench = BENCHMARKS.get("m3cot")(data=str(written["m3cot"]))
    assert len(bench) == 24
    sample = bench.sample(0)
    assert sample.gold in "ABCD" and len(sample.choices) == 4
    assert sample.images()[0].size[0] >= 64


def test_mmstar_fixture_has_exactly_the_official_columns(written):
    import pandas as pd
    from PIL import Image

    table = pd.read_csv(written["mmstar"], sep="\t")
    assert tuple(table.columns) == MMSTAR_COLUMNS
    assert list(table["index"]) == list(range(24))
    assert set(table["category"]) == set(MMSTAR_CATEGORIES)
    for _, row in table.iterrows():
        assert row["l2_category"] in MMSTAR_CATEGORIES[row["category"]]
        assert row["answer"] in "ABCD"
    images = dict(zip(table["index"], table["image"]))
    references = {i: int(cell) for i, cell in images.items() if len(cell) <= 64}
    assert references, "some rows must point at another row's image"
    for i, ref in references.items():
        assert len(images[ref]) > 64  # points at a row that holds the base64 PNG itself
    for _, row in table.iterrows():
        cell = images[references.get(row["index"], row["index"])]
        image = Image.open(io.BytesIO(base64.b64decode(cell, validate=True)))
        assert image.format == "PNG" and 64 <= image.width <= 96
        assert_answerable(image, row["question"], [row[c] for c in "ABCD"], row["answer"])


def test_fixtures_are_deterministic(tmp_path):
    a = write_mmstar_fixture(tmp_path / "a.tsv", n=8, seed=3).read_bytes()
    b = write_mmstar_fixture(tmp_path / "b.tsv", n=8, seed=3).read_bytes()
    c = write_mmstar_fixture(tmp_path / "c.tsv", n=8, seed=4).read_bytes()
    assert a == b and a != c

    import datasets

    rows = [datasets.load_from_disk(str(write_m3cot_fixture(tmp_path / f"m{i}", n=5, seed=3)))["test"].to_list()
            for i in range(2)]
    assert rows[0] == rows[1]


def test_cli_writes_and_prints_paths(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--n", "6", "--seed", "1"]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    assert set(printed) == {"m3cot", "mmstar", "mmbench", "mmvp", "pope", "scienceqa", "mathvista", "mathverse"}
    assert (tmp_path / "m3cot").is_dir() and printed["mmstar"] == str(tmp_path / "MMStar_fixture.tsv")
