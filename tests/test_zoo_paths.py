"""``--model zoo:NAME``: a built zoo model by name, the same name (and so the same runs) on every machine."""
from __future__ import annotations

import json

import pytest

from harness.backbones import ModelLoadError, load_backbone, model_fingerprint, model_name
from harness.cli import main


@pytest.fixture()
def zoo(tmp_path, monkeypatch, tiny_model_dirs):
    import shutil

    shutil.copytree(tiny_model_dirs["qwen2-vl"], tmp_path / "toy")
    monkeypatch.setenv("HARNESS_ZOO", str(tmp_path))
    return tmp_path


def test_a_zoo_name_resolves_to_its_folder_and_keeps_its_name(zoo):
    assert model_name("zoo:toy") == "zoo:toy"
    assert model_fingerprint("zoo:toy") == model_fingerprint(str(zoo / "toy")) != "main"
    backbone = load_backbone("zoo:toy", device="cpu", dtype="float32")
    assert backbone.model_id == "zoo:toy" and backbone.revision == model_fingerprint(str(zoo / "toy"))
    for bad in ("zoo:nope", "zoo:", "zoo:../toy"):
        with pytest.raises(ModelLoadError, match="harness zoo"):
            model_name(bad)


def test_run_on_a_zoo_model_stores_the_zoo_name(zoo, tmp_path, capsys):
    from harness.run.store import Store
    from harness.testing.fixtures import write_all

    data = write_all(tmp_path / "data", n=4, seed=0)
    db = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["run", "--method", "direct", "--bench", "m3cot", "--model", "zoo:toy", "--data", str(data["m3cot"]),
                 "--db", db, "--json", "--no-progress"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert Store(db, read_only=True).run(run_id)["model"] == "zoo:toy"
    assert main(["run", "--method", "direct", "--bench", "m3cot", "--model", "zoo:absent", "--data",
                 str(data["m3cot"]), "--db", db]) == 2
    assert "harness zoo build absent" in capsys.readouterr().err
