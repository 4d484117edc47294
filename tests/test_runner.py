"""`harness run` end to end on tiny models and fixture data: storage, resume, errors, concurrency."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from harness.cli import main
from harness.run.runner import select_positions
from harness.run.store import Store


@pytest.fixture(scope="module")
def m3cot_data(tmp_path_factory):
    from harness.testing.fixtures import write_m3cot_fixture

    return str(write_m3cot_fixture(tmp_path_factory.mktemp("data") / "m3cot", n=12, seed=0))


@pytest.fixture()
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'runs.db'}"


def run_cli(*args) -> int:
    return main(["run", "--no-progress", *map(str, args)])


def test_run_stores_scored_samples_and_metrics(tiny_model_dirs, m3cot_data, db, capsys):
    model = tiny_model_dirs["qwen2-vl"]
    assert run_cli("--method", "cot", "--bench", "m3cot", "--model", model, "--data", m3cot_data, "--limit", 6,
                   "--batch-size", 3, "--max-new-tokens", 12, "--db", db) == 0
    assert "results:" in capsys.readouterr().out
    store = Store(db)
    (run,) = store.runs()
    assert run["status"] == "finished" and run["method"] == "cot" and run["benchmark"] == "m3cot"
    assert run["method_config"]["max_new_tokens"] == 12 and run["model_revision"].startswith("sha256:")
    assert run["library_versions"]["torch"] and run["device"] == "cpu" and run["dtype"] == "float32"
    samples = store.samples(run["id"])
    assert len(samples) == 6 and all(s["error"] is None for s in samples)
    assert all(0 < s["generated_tokens"] <= 12 and s["input_tokens"] > 10 for s in samples)
    assert all("[Question]" in s["prompt"] and s["gold"] in "ABCD" for s in samples)
    metrics = run["metrics"]
    assert metrics["n"] == 6 and metrics["correct"] == sum(s["correct"] for s in samples)
    assert metrics["mean_generated_tokens"] == pytest.approx(sum(s["generated_tokens"] for s in samples) / 6, abs=1e-3)
    assert metrics["peak_memory_mb"] > 0 and metrics["samples_per_second"] > 0
    assert run["official"]["overall"]["total"] == 6
    assert run["official"]["overall"]["correct"] == metrics["correct"], "per-sample judge agrees with official score"
    (score,) = store.scores(run["id"])
    assert score["kind"] == "official" and score["details"] == run["official"]
    assert score["accuracy"] == run["official"]["overall"]["accuracy"]


def test_limit_is_a_deterministic_subset():
    assert select_positions(100, 10, seed=0) == select_positions(100, 10, seed=0)
    assert select_positions(100, 10, seed=0) != select_positions(100, 10, seed=1)
    assert select_positions(5, 10, seed=0) == [0, 1, 2, 3, 4]
    assert select_positions(100, 10, seed=3) == sorted(select_positions(100, 10, seed=3))


def test_batching_does_not_change_greedy_outputs(tiny_model_dirs, m3cot_data, tmp_path):
    predictions = {}
    for batch_size in (1, 4):
        db = f"sqlite:///{tmp_path / f'b{batch_size}.db'}"
        assert run_cli("--method", "direct", "--bench", "m3cot", "--model", tiny_model_dirs["llava"],
                       "--data", m3cot_data, "--limit", 8, "--batch-size", batch_size, "--db", db) == 0
        store = Store(db)
        predictions[batch_size] = [s["prediction"] for s in store.samples(store.runs()[0]["id"])]
    assert predictions[1] == predictions[4]


def test_rerun_resumes_without_recomputing(tiny_model_dirs, m3cot_data, db, monkeypatch):
    from harness.backbones.base import Backbone

    calls, crashed = [], []
    original = Backbone.generate

    def failing_on_third_batch(self, images, prompts, max_new_tokens):
        calls.append(len(prompts))
        if len(calls) == 3 and not crashed:
            crashed.append(True)
            raise RuntimeError("simulated crash")
        return original(self, images, prompts, max_new_tokens)

    monkeypatch.setattr(Backbone, "generate", failing_on_third_batch)
    args = ("--method", "direct", "--bench", "m3cot", "--model", tiny_model_dirs["qwen2-vl"], "--data", m3cot_data,
            "--limit", 8, "--batch-size", 2, "--db", db)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(*args)
    store = Store(db)
    (failed,) = store.runs()
    assert failed["status"] == "failed" and "simulated crash" in failed["error"]
    first_rows = {s["uid"]: s["id"] for s in store.samples(failed["id"])}
    assert len(first_rows) == 4

    calls.clear()
    assert run_cli(*args) == 0
    assert sum(calls) == 4, "only the 4 missing samples are computed again"
    (run,) = store.runs()
    assert run["id"] == failed["id"] and run["status"] == "finished"
    rows = store.samples(run["id"])
    assert len(rows) == 8 and all(first_rows.get(s["uid"], s["id"]) == s["id"] for s in rows)

    calls.clear()
    assert run_cli(*args, "--fresh") == 0
    assert sum(calls) == 8
    runs = store.runs(include_superseded=True)
    assert [r["status"] for r in runs] == ["finished", "superseded"]


def test_a_different_configuration_is_a_different_run(tiny_model_dirs, m3cot_data, db):
    base = ("--bench", "m3cot", "--model", tiny_model_dirs["qwen2-vl"], "--data", m3cot_data, "--limit", 2, "--db", db)
    assert run_cli("--method", "direct", *base) == 0
    assert run_cli("--method", "direct", *base, "--max-new-tokens", 5) == 0
    assert run_cli("--method", "direct", *base, "--seed", 1) == 0
    assert len(Store(db).runs()) == 3


def test_corrupt_image_becomes_an_error_sample(tiny_model_dirs, tmp_path, db):
    import datasets

    from harness.testing.fixtures import write_m3cot_fixture

    path = write_m3cot_fixture(tmp_path / "m3cot", n=4, seed=1)
    test = datasets.load_from_disk(str(path))["test"].cast_column("image", datasets.Image(decode=False))
    rows = test.to_list()
    rows[1]["image"] = {"bytes": b"not a png", "path": None}
    broken = datasets.Dataset.from_list(rows, features=test.features)
    broken.save_to_disk(str(tmp_path / "broken"))
    assert run_cli("--method", "direct", "--bench", "m3cot", "--model", tiny_model_dirs["qwen2-vl"],
                   "--data", tmp_path / "broken", "--db", db) == 0
    store = Store(db)
    (run,) = store.runs()
    assert run["status"] == "finished" and run["metrics"]["n_errors"] == 1 and run["metrics"]["n"] == len(rows)
    (error,) = [s for s in store.samples(run["id"]) if s["error"]]
    assert error["uid"] == rows[1]["id"] and "BadImage" in error["error"] and error["correct"] is False


@pytest.mark.parametrize("args, expected", [
    (["--method", "nope", "--bench", "m3cot", "--model", "x"], "unknown method 'nope'; choose one of: cot, direct, ivt-lr, l2v-cot, lare, mm-cot, modal-mixed"),
    (["--method", "cot", "--bench", "nope", "--model", "x"], "unknown benchmark 'nope'; choose one of:"),
    (["--method", "cot", "--bench", "mmvp", "--model", "x"], "MMVP data not found at"),
    (["--method", "cot", "--bench", "m3cot", "--model", "x", "--data", "/no/such/dir"], "/no/such/dir"),
    (["--method", "cot", "--bench", "m3cot", "--model", "x", "--opt", "temperature=1"], "has no option 'temperature'"),
])
def test_bad_input_is_one_line_and_exit_2(args, expected, capsys):
    assert run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and err.startswith("harness: error:")


def test_missing_model_is_one_line_and_exit_2(m3cot_data, db, capsys):
    assert run_cli("--method", "cot", "--bench", "m3cot", "--model", "/no/such/model", "--data", m3cot_data,
                   "--db", db) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1


def test_help_and_list_do_not_import_heavy_libraries():
    code = ("import sys, io, contextlib\nfrom harness.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out: main(['list'])\n"
            "heavy = [m for m in ('torch', 'transformers', 'vlmeval', 'pandas', 'datasets') if m in sys.modules]\n"
            "assert not heavy, heavy\nassert 'mm-cot' in out.getvalue() and 'mathvista' in out.getvalue()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _harness(*args):
    return [sys.executable, "-m", "harness.cli", "run", "--no-progress", *map(str, args)]


def test_kill_9_loses_at_most_the_batch_in_flight(tiny_model_dirs, tmp_path):
    from harness.testing.fixtures import write_m3cot_fixture

    data = write_m3cot_fixture(tmp_path / "m3cot", n=40, seed=2)
    db_file = tmp_path / "kill.db"
    args = ("--method", "cot", "--bench", "m3cot", "--model", tiny_model_dirs["qwen2-vl"], "--data", data,
            "--max-new-tokens", 48, "--db", f"sqlite:///{db_file}")
    proc = subprocess.Popen(_harness(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stored = 0
    deadline = time.time() + 120
    while stored < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db_file.exists():
            try:
                with sqlite3.connect(db_file) as conn:
                    stored = conn.execute("select count(*) from samples").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db_file) as conn:
        before = dict(conn.execute("select uid, id from samples").fetchall())
    assert 3 <= len(before) < 40

    subprocess.run(_harness(*args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    store = Store(f"sqlite:///{db_file}")
    (run,) = store.runs()
    rows = store.samples(run["id"])
    assert run["status"] == "finished" and len(rows) == 40
    assert all(before[s["uid"]] == s["id"] for s in rows if s["uid"] in before), "stored samples were kept"


def test_two_runs_writing_one_sqlite_file_both_finish(tiny_model_dirs, m3cot_data, tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [subprocess.Popen(_harness("--method", method, "--bench", "m3cot", "--model", tiny_model_dirs["qwen2-vl"],
                                       "--data", m3cot_data, "--max-new-tokens", 8, "--db", db),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for method in ("direct", "cot")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    runs = Store(db).runs()
    assert sorted(r["method"] for r in runs) == ["cot", "direct"]
    assert all(r["status"] == "finished" and r["metrics"]["n"] == 12 for r in runs)
