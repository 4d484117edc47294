"""Bad input gets one line and exit 2, before anything loads or is written; nothing is silently wrong.

One table of cases (input → exit code → message fragment → nothing written), then the cases that need
more set-up: a checkpoint on the wrong base model, duplicate M3CoT ids, one run for three spellings of
a model path, an image over the pixel limit, and SIGTERM.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.run.store import Store


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dirs):
    """Fixture data, a file, a non-empty folder, and a model folder with its weights cut short or gone."""
    from harness.testing.fixtures import write_all

    root = tmp_path_factory.mktemp("hardening")
    data = write_all(root / "data", n=8, benches=["m3cot"])
    qwen = Path(tiny_model_dirs["qwen2-vl"])
    truncated, missing = root / "truncated", root / "missing"
    shutil.copytree(qwen, truncated)
    weights = truncated / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    shutil.copytree(qwen, missing)
    (missing / "model.safetensors").unlink()
    (root / "a-file").write_text("x")
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("mine")
    return {"root": root, "m3cot": str(data["m3cot"]), "qwen": str(qwen), "llava": str(tiny_model_dirs["llava"]),
            "truncated": str(truncated), "missing": str(missing)}


def _run(w, *extra, model="qwen"):
    return ["run", "--method", "direct", "--bench", "m3cot", "--model", w.get(model, model), "--data", w["m3cot"],
            "--limit", "2", "--no-progress", "--db", str(w["root"] / "cases.db"), *extra]


# (name, argv builder, message fragment); every case: exit 2, one line, and no run row left behind.
CASES = [
    ("max-new-tokens 0", lambda w: _run(w, "--max-new-tokens", "0"), "--max-new-tokens must be at least 1"),
    ("device banana", lambda w: _run(w, "--device", "banana"), "unknown device 'banana'"),
    ("device cuda without a GPU", lambda w: _run(w, "--device", "cuda"), "no CUDA GPU is visible"),
    ("max-image-pixels negative", lambda w: _run(w, "--max-image-pixels", "-5"), "--max-image-pixels must be"),
    ("truncated weights", lambda w: _run(w, model="truncated"), "truncated .safetensors"),
    ("missing weights", lambda w: _run(w, model="missing"), "cannot load the weights"),
    ("model folder as checkpoint", lambda w: ["run", "--method", "ivt-lr", *_run(w, "--checkpoint", w["qwen"])[3:]],
     "model folder, not an ivt-lr checkpoint"),
    ("missing checkpoint", lambda w: ["run", "--method", "ivt-lr", *_run(w, "--checkpoint", "/no/ckpt")[3:]],
     "does not exist"),
    ("fixtures --out a file", lambda w: ["fixtures", "--out", str(w["root"] / "a-file")], "is an existing file"),
    ("tiny-model --out a file", lambda w: ["tiny-model", "--family", "qwen2", "--out", str(w["root"] / "a-file")],
     "is an existing file"),
    ("tiny-model --out a non-empty folder", lambda w: ["tiny-model", "--family", "qwen2", "--out",
                                                       str(w["root"] / "full")], "is a folder that is not empty"),
    ("train --max-steps 0", lambda w: ["train", "--method", "ivt-lr", "--bench", "m3cot", "--model", w["qwen"],
                                       "--data", w["m3cot"], "--out", str(w["root"] / "ck0"), "--max-steps", "0"],
     "--max-steps must be at least 1"),
    ("train --max-steps -1", lambda w: ["train", "--method", "ivt-lr", "--bench", "m3cot", "--model", w["qwen"],
                                        "--data", w["m3cot"], "--out", str(w["root"] / "ck1"), "--max-steps", "-1"],
     "--max-steps must be at least 1"),
    ("train --out a file", lambda w: ["train", "--method", "ivt-lr", "--bench", "m3cot", "--model", w["qwen"],
                                      "--data", w["m3cot"], "--out", str(w["root"] / "a-file")], "is an existing file"),
]


@pytest.mark.parametrize("name,argv,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_written(world, name, argv, fragment, capsys):
    before = sorted(p.relative_to(world["root"]) for p in world["root"].rglob("*"))
    assert main(argv(world)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO ")]
    assert len(err) == 1 and err[0].startswith("harness: error: ") and fragment in err[0], err
    after = sorted(p.relative_to(world["root"]) for p in world["root"].rglob("*"))
    new = [p for p in after if p not in before and not str(p).startswith("cases.db")]
    assert not new, f"{name} wrote {new}"
    assert (world["root"] / "full" / "keep.txt").read_text() == "mine"
    if (world["root"] / "cases.db").exists():
        assert Store(str(world["root"] / "cases.db"), read_only=True).runs() == [], "a failed run was left behind"


# -- silently wrong results --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ivt_checkpoint(world):
    out = world["root"] / "ivt-ckpt"
    assert main(["train", "--method", "ivt-lr", "--bench", "m3cot", "--model", world["qwen"], "--data",
                 world["m3cot"], "--out", str(out), "--max-steps", "1", "--no-progress", "--lora-r", "4"]) == 0
    return str(out)


def test_checkpoint_on_another_family_is_refused(world, ivt_checkpoint, capsys):
    capsys.readouterr()
    argv = ["run", "--method", "ivt-lr", *_run(world, "--checkpoint", ivt_checkpoint, model="llava")[3:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model_type" in err and "cannot fit" in err
    # Even the override does not load an adapter of another architecture.
    assert main(argv + ["--allow-base-mismatch"]) == 2


def test_checkpoint_on_other_weights_of_the_same_shape_needs_the_flag(world, ivt_checkpoint, tmp_path, capsys):
    from harness.backbones.tiny import write_tiny_model

    other = write_tiny_model("qwen2-vl", tmp_path / "other-seed", seed=7)  # same config, other weights
    capsys.readouterr()
    argv = ["run", "--method", "ivt-lr", *_run(world, "--checkpoint", ivt_checkpoint, model=str(other))[3:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "weights differ" in err and "--allow-base-mismatch" in err
    assert main(argv + ["--allow-base-mismatch", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    stored = Store(str(world["root"] / "cases.db"), read_only=True).run(run["run_id"])
    assert stored["method_config"]["allow_base_mismatch"] is True
    # The right base model loads it, and the option's default leaves the stored config as it was.
    assert main(["run", "--method", "ivt-lr", *_run(world, "--checkpoint", ivt_checkpoint)[3:], "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert "allow_base_mismatch" not in Store(str(world["root"] / "cases.db"), read_only=True).run(
        run["run_id"])["method_config"]


@pytest.mark.parametrize("layout", ["jsonl", "arrow", "parquet"])
def test_duplicate_m3cot_ids_are_refused(world, layout, tmp_path, capsys):
    import datasets

    rows = datasets.load_from_disk(str(Path(world["m3cot"]) / "test")).to_list()
    for row in rows:
        row["image"] = None
    rows[5]["id"] = rows[2]["id"]
    if layout == "jsonl":
        path = tmp_path / "dup.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        where = "line 3 and dup.jsonl line 6"
    else:
        dataset = datasets.Dataset.from_list(rows)
        path = tmp_path / ("dup" if layout == "arrow" else "dup.parquet")
        dataset.save_to_disk(str(path)) if layout == "arrow" else dataset.to_parquet(str(path))
        where = "row 2 and" if layout == "arrow" else "dup.parquet row 2 and dup.parquet row 5"
    capsys.readouterr()
    argv = _run(world)
    argv[argv.index("--data") + 1] = str(path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"ids repeat: {rows[2]['id']!r}" in err and where in err, err


def test_three_spellings_of_a_model_path_are_one_run(world, tmp_path, monkeypatch, capsys):
    model = Path(world["qwen"])
    monkeypatch.chdir(model.parent)
    db = str(tmp_path / "spell.db")
    for spelling in (model.name, f"./{model.name}", str(model)):
        argv = _run(world, model=spelling)
        argv[argv.index("--db") + 1] = db
        assert main(argv) == 0
    (run,) = Store(db, read_only=True).runs()
    assert run["model"] == str(model.resolve())


def test_an_image_over_the_pixel_limit_is_an_error_sample_not_gigabytes(world, tmp_path, capsys):
    from PIL import Image

    from harness.api import BadImage, decode_image

    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000), 1).save(huge)  # 144 M pixels: 430 MB as RGB, 20 kB as a PNG
    with pytest.raises(BadImage, match="12000x12000 = 144,000,000 pixels is over the limit"):
        decode_image(str(huge))
    assert decode_image(str(huge), max_pixels=None).size == (12000, 12000)  # the limit is the only thing
    import datasets

    rows = datasets.load_from_disk(str(Path(world["m3cot"]) / "test")).to_list()[:3]
    for i, row in enumerate(rows):
        row["image"] = str(huge) if i == 1 else None
    data = tmp_path / "huge.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = str(tmp_path / "huge.db")
    argv = _run(world)
    argv[argv.index("--data") + 1] = str(data)
    argv[argv.index("--db") + 1] = db
    capsys.readouterr()
    assert main(argv[:argv.index("--limit")] + argv[argv.index("--limit") + 2:]) == 0
    (run,) = Store(db, read_only=True).runs()
    errors = [s["error"] for s in Store(db, read_only=True).samples(run["id"]) if s["error"]]
    assert run["status"] == "finished" and len(errors) == 1 and "over the limit" in errors[0]
    assert "--max-image-pixels" in errors[0]


def test_missing_image_file_says_so():
    from harness.api import BadImage, decode_image

    with pytest.raises(BadImage, match="image file /no/such/picture.png does not exist"):
        decode_image("/no/such/picture.png")


# -- runs that died ----------------------------------------------------------------------------------
def test_sigterm_marks_the_run_interrupted_and_exits_143(world, tmp_path):
    from harness.testing.fixtures import write_m3cot_fixture

    data = write_m3cot_fixture(tmp_path / "m3cot", n=40, seed=3)
    db_file = tmp_path / "term.db"
    argv = [sys.executable, "-m", "harness.cli", "run", "--method", "cot", "--bench", "m3cot", "--model",
            world["qwen"], "--data", str(data), "--max-new-tokens", "48", "--no-progress", "--db", str(db_file)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stored, deadline = 0, time.time() + 120
    while stored < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(db_file) as conn:
                stored = conn.execute("select count(*) from samples").fetchone()[0]
        except sqlite3.OperationalError:
            pass
    assert proc.poll() is None, "the run finished before it could be terminated; make it longer"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "terminated (SIGTERM)" in err.decode() and "Traceback" not in err.decode()
    (run,) = Store(str(db_file), read_only=True).runs()
    assert run["status"] == "interrupted" and "SIGTERM" in run["error"]
    assert run["n_samples"] >= 2


def test_text_that_is_neither_a_file_nor_base64_says_so():
    from harness.api import BadImage, decode_image

    with pytest.raises(BadImage, match="neither an existing image file nor base64"):
        decode_image("not an image at all")


def test_importing_vlmeval_logs_no_dotenv_error(caplog):
    import logging

    from harness.benchmarks.vlmeval_common import import_vlmeval

    code = ("import logging, sys\nlogging.basicConfig(stream=sys.stderr)\n"
            "from harness.benchmarks.vlmeval_common import import_vlmeval\nimport_vlmeval()\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stderr
    assert ".env" not in err, err
    with caplog.at_level(logging.ERROR):
        import_vlmeval()
        logging.getLogger().error("Did not detect the .env file: a later message of ours still shows")
    assert any("later message" in r.getMessage() for r in caplog.records), "the filter was left on the root logger"


# -- VLMEvalKit's own entry points see only checked tables ---------------------------------------------
def _hostile_mathvista(tmp_path, out, payload):
    """The MathVista fixture with ``payload`` in the first row's skills cell."""
    import pandas as pd

    from harness.testing.fixtures import write_all

    table = pd.read_csv(write_all(tmp_path / "fx", n=4, benches=["mathvista"])["mathvista"], sep="\t")
    table["skills"] = table["skills"].astype(object)
    table.loc[0, "skills"] = payload
    table.to_csv(out, sep="\t", index=False)
    return out


def test_vlmeval_local_dataset_checks_cells_before_vlmeval_sees_them(tmp_path):
    from harness.api import DataError
    from harness.integrations.vlmeval_model import local_dataset

    marker = tmp_path / "pwned"
    hostile = _hostile_mathvista(tmp_path, tmp_path / "MathVista_MINI.tsv",
                                 f"[__import__('pathlib').Path({str(marker)!r}).touch()]")
    with pytest.raises(DataError, match="column skills"):
        dataset = local_dataset(hostile, "MathVista_MINI")
        dataset.evaluate  # noqa: B018  (never reached)
    assert not marker.exists()
    with pytest.raises(ValueError, match="its own benchmarks only"):
        local_dataset(hostile, "OCRBench")


def test_python_m_harness_vlmeval_checks_lmudata_files_first(tmp_path, tiny_model_dirs):
    marker = tmp_path / "pwned"
    lmu = tmp_path / "lmu"
    lmu.mkdir()
    _hostile_mathvista(tmp_path, lmu / "MathVista_MINI.tsv", f"__import__('pathlib').Path({str(marker)!r}).touch()")
    env = {**os.environ, "LMUData": str(lmu)}
    proc = subprocess.run([sys.executable, "-m", "harness.integrations.vlmeval_model", "--models", str(tiny_model_dirs["qwen2-vl"]),
                           "--methods", "direct", "--", "--data", "MathVista_MINI", "--model", "x"],
                          capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("harness.integrations.vlmeval_model: error:") and "skills" in proc.stderr
    assert not marker.exists()
