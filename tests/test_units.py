"""``Benchmark.units()``: the positions a subset keeps together (MMBench rotation groups, MMVP pairs, else
each question alone), read from small TSVs written here by hand, rows out of order on purpose; and the
subset that draws them. ``import vlmeval`` (~10 s) happens once, for the module.
"""
from __future__ import annotations

import base64
import io

import pandas as pd
import pytest
from PIL import Image

from harness.api import BENCHMARKS, Benchmark, DataError, Grade, Sample


def png_b64(colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_tsv(path, rows: list[dict]):
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def mcq_row(index: int, question: str, image: str, category: str, answer: str = "A") -> dict:
    return {"index": index, "question": question, "A": "red", "B": "blue", "C": "green", "D": "grey",
            "answer": answer, "category": category, "image": image}


@pytest.fixture(scope="module")
def mmbench_tsv(tmp_path_factory):
    red, blue = png_b64((255, 0, 0)), png_b64((0, 0, 255))
    # Rotation groups are index % 1e6; rows of a group are scattered, and one row's image refers to another row.
    rows = [mcq_row(1, "q1", blue, "colour"), mcq_row(0, "q0", red, "shape"), mcq_row(1000000, "q0", "0", "shape"),
            mcq_row(1000001, "q1", blue, "colour"), mcq_row(2, "q2", red, "colour"),
            mcq_row(2000000, "q0", red, "shape")]
    return write_tsv(tmp_path_factory.mktemp("mmbench") / "MMBench_DEV_EN.tsv", rows)


@pytest.fixture(scope="module")
def mmvp_tsv(tmp_path_factory):
    image = png_b64((0, 255, 0))
    # Pairs are rows 2i, 2i+1 in *index* order: (0, 1) and (2, 3), whatever the file order.
    rows = [{"index": i, "question": q, "A": "yes", "B": "no", "answer": "A", "category": c, "image": image}
            for i, q, c in ((3, "is it b?", "b"), (0, "is it a?", "a"), (1, "is it a?", "a"), (2, "is it b?", "b"))]
    return write_tsv(tmp_path_factory.mktemp("mmvp") / "MMVP.tsv", rows)


@pytest.fixture(scope="module")
def pope_tsv(tmp_path_factory):
    image = png_b64((9, 9, 9))
    rows = [{"index": i, "question": f"is there a {i}?", "answer": "Yes" if i % 2 else "No",
             "category": "random", "image": image} for i in (5, 3, 4)]
    return write_tsv(tmp_path_factory.mktemp("pope") / "POPE.tsv", rows)


def test_mmbench_units_are_rotation_groups_in_order_of_first_row(mmbench_tsv):
    bench = BENCHMARKS.get("mmbench")(str(mmbench_tsv))
    # positions: 0→1, 1→0, 2→1000000, 3→1000001, 4→2, 5→2000000
    assert bench.units() == [[0, 3], [1, 2, 5], [4]]
    assert bench.units_label == "rotation groups"


def test_mmvp_units_are_pairs_by_index_order(mmvp_tsv):
    bench = BENCHMARKS.get("mmvp")(str(mmvp_tsv))
    # positions: 0→index 3, 1→0, 2→1, 3→2; pairs (0, 1) and (2, 3) by index
    assert bench.units() == [[0, 3], [1, 2]]
    assert bench.units_label == "pairs"


def test_other_benchmarks_keep_each_position_alone(pope_tsv):
    bench = BENCHMARKS.get("pope")(str(pope_tsv))
    assert bench.units() == [[0], [1], [2]] and bench.units_label == "questions"


def test_the_default_units_need_only_len():
    class Three(Benchmark):
        name = "three"

        def __len__(self):
            return 3

        def sample(self, position):
            return Sample(uid=str(position), question="q", gold="A")

        def grade(self, sample, answer):
            return Grade(extracted=answer, correct=answer == sample.gold)

    assert Three().units() == [[0], [1], [2]]
    with pytest.raises(DataError, match="reads no prediction files"):
        Three().read_predictions("p.jsonl")


def test_a_subset_draws_whole_units(mmbench_tsv, mmvp_tsv, tmp_path):
    from harness.data.subset import write_subset

    for seed in range(4):
        made = write_subset("mmbench", 1, seed=seed, data=str(mmbench_tsv), out=str(tmp_path / f"mmb{seed}.tsv"))
        part = pd.read_csv(made.path, sep="\t")
        groups = {i % 1_000_000 for i in part["index"]}
        full = pd.read_csv(mmbench_tsv, sep="\t")
        assert made.units == 1 and len(groups) == 1
        assert list(part["index"]) == [i for i in full["index"] if i % 1_000_000 in groups]  # file order kept
        assert all(len(str(c)) > 64 for c in part["image"])  # the reference to a dropped row is inlined
        made = write_subset("mmvp", 1, seed=seed, data=str(mmvp_tsv), out=str(tmp_path / f"mmvp{seed}.tsv"))
        assert sorted(pd.read_csv(made.path, sep="\t")["index"]) in ([0, 1], [2, 3])
    made = write_subset("mmbench", 2, data=str(mmbench_tsv), out=str(tmp_path / "two.tsv"))
    assert "2 rotation groups" in made.summary and made.scored_as == "MMBench_DEV_EN"


def test_the_local_dataset_writes_images_only_when_asked(mmvp_tsv):
    from harness.benchmarks.vlmeval_common import vlmeval_dataset_over_table

    table = BENCHMARKS.get("mmvp")(str(mmvp_tsv)).load_table()
    quiet = vlmeval_dataset_over_table("ImageMCQDataset", "MMVP", table.copy())
    assert quiet.dump_image(quiet.data.iloc[0]) == ["<image of row 3>"]
    writing = vlmeval_dataset_over_table("ImageMCQDataset", "MMVP", table.copy(), dump_images=True)
    assert "dump_image" not in type(writing).__dict__ and type(writing) is not type(quiet)
