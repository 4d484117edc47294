"""`harness data prepare` (check, md5, place) and `harness data subset` (stratified, whole groups/pairs)."""
from __future__ import annotations

import pandas as pd
import pytest

from harness.cli import main
from harness.data.subset import stratified
from harness.testing.fixtures import write_all


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("fixtures"), n=24, seed=0,
                     benches=["m3cot", "mmbench", "mmvp", "pope", "scienceqa"])


@pytest.fixture()
def lmu(tmp_path, monkeypatch):
    root = tmp_path / "LMUData"
    root.mkdir()
    monkeypatch.setenv("LMUData", str(root))
    return root


def err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("harness: error: ")
    return err


def test_prepare_checks_md5_and_places_only_official_files(files, lmu, capsys, monkeypatch):
    assert main(["data", "prepare", "--bench", "pope", "--from", str(files["pope"])]) == 2
    message = err_line(capsys)
    assert "md5" in message and "differs from VLMEvalKit's c12f5acb142f2ef1f85a26ba2fbe41d5" in message
    assert not (lmu / "POPE.tsv").exists()
    assert main(["data", "prepare", "--bench", "pope", "--from", str(files["pope"]), "--force"]) == 0
    assert (lmu / "POPE.tsv").read_bytes() == files["pope"].read_bytes()
    # A file whose md5 is the registered one is placed without --force.
    import vlmeval.dataset as datasets
    from vlmeval.smp import md5

    monkeypatch.setitem(datasets.ImageMCQDataset.DATASET_MD5, "MMVP", md5(str(files["mmvp"])))
    assert main(["data", "prepare", "--bench", "mmvp", "--from", str(files["mmvp"])]) == 0
    out = capsys.readouterr().out
    assert "md5 matches VLMEvalKit's" in out and "every image decodes" in out and (lmu / "MMVP.tsv").is_file()


def test_prepare_says_what_is_missing_and_where_to_get_it(lmu, capsys):
    assert main(["data", "prepare", "--bench", "mmbench"]) == 2
    message = err_line(capsys)
    assert str(lmu / "MMBench_DEV_EN.tsv") in message and "MMBench_DEV_EN.tsv" in message
    assert "https://" in message and "--from" in message


def test_prepare_rejects_undecodable_images_naming_rows(files, lmu, tmp_path, capsys):
    path = tmp_path / "ScienceQA_VAL.tsv"
    table = pd.read_csv(files["scienceqa"], sep="\t")
    table.loc[3, "image"] = "x" * 100
    table.to_csv(path, sep="\t", index=False)
    assert main(["data", "prepare", "--bench", "scienceqa", "--from", str(path), "--force"]) == 2
    message = err_line(capsys)
    assert str(path) in message and "line 5 (index 3)" in message and not (lmu / "ScienceQA_VAL.tsv").exists()


def test_prepare_m3cot_checks_the_folder(files, capsys):
    assert main(["data", "prepare", "--bench", "m3cot", "--from", str(files["m3cot"])]) == 0
    assert "test 24 rows" in capsys.readouterr().out
    assert main(["data", "prepare", "--bench", "m3cot"]) == 2
    assert "save_to_disk" in err_line(capsys)


def test_stratified_is_proportional_deterministic_and_covers_categories():
    units = {"a": list(range(10)), "b": list(range(100, 130)), "c": [200, 201]}
    chosen = stratified(units, 8, seed=1)
    assert chosen == stratified(units, 8, seed=1) and chosen != stratified(units, 8, seed=2)
    counts = {c: sum(u in units[c] for u in chosen) for c in units}
    assert sum(counts.values()) == 8 and counts["b"] > counts["a"] >= 1 and counts["c"] >= 1


def test_subset_keeps_mmbench_groups_whole_and_scores_as_mmbench(files, lmu, capsys):
    assert main(["data", "subset", "--bench", "mmbench", "--n", "3", "--data", str(files["mmbench"])]) == 0
    out_path = lmu / "MMBench_DEV_EN_harness_n3_s0.tsv"
    assert str(out_path) in capsys.readouterr().out
    part = pd.read_csv(out_path, sep="\t")
    full = pd.read_csv(files["mmbench"], sep="\t")
    groups = {i % 1_000_000 for i in part["index"]}
    assert len(groups) == 3
    assert sorted(part["index"]) == sorted(i for i in full["index"] if i % 1_000_000 in groups)
    from harness.api import BENCHMARKS

    bench = BENCHMARKS.get("mmbench")(str(out_path))
    samples = list(bench.samples())
    result = bench.score(samples, [s.gold for s in samples])
    assert result["overall"]["total"] == 3 and result["vlmeval"]["dataset"] == "MMBench_DEV_EN"
    assert all(s.images()[0].width >= 64 for s in samples)  # references to dropped rows were inlined
    again = lmu / "again.tsv"
    assert main(["data", "subset", "--bench", "mmbench", "--n", "3", "--data", str(files["mmbench"]),
                 "--out", str(again)]) == 0
    assert again.read_bytes() == out_path.read_bytes()


def test_subset_keeps_mmvp_pairs_and_pope_categories(files, lmu, capsys):
    assert main(["data", "subset", "--bench", "mmvp", "--n", "4", "--data", str(files["mmvp"])]) == 0
    part = pd.read_csv(lmu / "MMVP_harness_n4_s0.tsv", sep="\t")
    assert len(part) == 8 and sorted({i // 2 for i in part["index"]}) == sorted(i // 2 for i in part["index"][::2])
    assert main(["data", "subset", "--bench", "pope", "--n", "6", "--data", str(files["pope"])]) == 0
    pope = pd.read_csv(lmu / "POPE_harness_n6_s0.tsv", sep="\t")
    assert len(pope) == 6 and len({c.split(",")[0] for c in pope["category"]}) == 3
    capsys.readouterr()
    assert main(["data", "subset", "--bench", "m3cot", "--n", "6"]) == 2
    assert "--limit" in err_line(capsys)


def test_prepare_and_subset_refuse_cells_vlmeval_would_eval(lmu, tmp_path, capsys):
    """A cell VLMEvalKit eval()s (here MathVista's skills, and a [...] image cell) is refused in one line
    naming file, row and column, before anything evaluates it; nothing is placed or written."""
    written = write_all(tmp_path / "fx", n=8, seed=0, benches=["mathvista", "pope"])
    pwned = tmp_path / "pwned"
    path = tmp_path / "MathVista_MINI.tsv"
    table = pd.read_csv(written["mathvista"], sep="\t")
    table.loc[2, "skills"] = f"['a'] + [__import__('pathlib').Path({str(pwned)!r}).touch()]"
    table.to_csv(path, sep="\t", index=False)
    assert main(["data", "prepare", "--bench", "mathvista", "--from", str(path), "--force"]) == 2
    message = err_line(capsys)
    assert str(path) in message and "line 4 (index 2), column skills" in message
    assert main(["data", "subset", "--bench", "mathvista", "--n", "2", "--data", str(path)]) == 2
    assert "column skills" in err_line(capsys)
    path = tmp_path / "POPE.tsv"
    table = pd.read_csv(written["pope"], sep="\t")
    table.loc[1, "image"] = f"[__import__('os').system('touch {pwned}')]"
    table.to_csv(path, sep="\t", index=False)
    assert main(["data", "prepare", "--bench", "pope", "--from", str(path), "--force"]) == 2
    assert "line 3 (index 1)" in err_line(capsys)  # that row's image does not resolve: nothing is placed
    assert not pwned.exists() and not list(lmu.iterdir())


def test_prepare_says_an_image_file_path_is_missing(lmu, tmp_path, capsys):
    written = write_all(tmp_path / "fx", n=8, seed=0, benches=["pope"])
    path = tmp_path / "POPE.tsv"
    table = pd.read_csv(written["pope"], sep="\t")
    table.loc[2, "image"] = "images/2.jpg"
    table.to_csv(path, sep="\t", index=False)
    assert main(["data", "prepare", "--bench", "pope", "--from", str(path), "--force"]) == 2
    message = err_line(capsys)
    assert "line 4 (index 2)" in message and "image file images/2.jpg does not exist" in message
    assert "base64" in message
