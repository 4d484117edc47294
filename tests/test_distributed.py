"""Data-parallel evaluation: the stored run does not depend on how many processes or which batch size
computed it, shards of one run resume under another process count, and bad input is one line."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from harness.cli import main
from harness.run.distributed import World, launch, parse_shard, shard_positions, share

RUN = ["run", "--method", "cot", "--bench", "easyvqa", "--model", "zoo:easyvqa-llava", "--limit", "12",
       "--max-new-tokens", "24", "--no-progress"]
LONG = [*RUN[:RUN.index("--limit") + 1], "60", *RUN[RUN.index("--limit") + 2:]]


def harness(*args: str, db, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args, "--db", f"sqlite:///{db}"], env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def stored(db) -> tuple[list[tuple], list[tuple]]:
    """(runs as (key, status, n_planned), samples as the output columns in position order)."""
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT key, status, n_planned FROM runs ORDER BY id").fetchall()
        rows = conn.execute("SELECT position, uid, prediction, answer, extracted, correct, generated_tokens, "
                            "input_tokens FROM samples ORDER BY position").fetchall()
    return runs, rows


def test_shares_partition_the_pending_positions():
    pending = [3, 5, 8, 13, 21, 34, 55]
    for size in (1, 2, 3, 8):
        parts = [share(pending, World(rank=r, size=size)) for r in range(size)]
        assert sorted(q for part in parts for q in part) == pending  # every position once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    planned = list(range(10))
    shards = [shard_positions(planned, (i, 3)) for i in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert shard_positions(planned, None) == planned


def test_shard_and_process_counts_are_checked():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="--processes"):
        launch(0, ["run"])


@pytest.mark.parametrize("argv, message", [
    (["--shard", "2/2"], "--shard 2/2: I must be in 0..N-1"),
    (["--processes", "0"], "--processes must be at least 1"),
])
def test_bad_distribution_flags_are_one_line_exit_2(argv, message, tmp_path, capsys):
    assert main([*RUN, *argv, "--db", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.db").exists()  # nothing written


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, batch 1."""
    db = tmp_path_factory.mktemp("reference") / "p1b1.db"
    harness(*RUN, "--batch-size", "1", db=db)
    runs, rows = stored(db)
    assert [r[1:] for r in runs] == [("finished", 12)] and len(rows) == 12
    assert any(r[6] > 2 for r in rows)  # real generated reasoning, not a two-token answer
    return db


def test_two_processes_with_batch_8_store_the_same_run_as_one_with_batch_1(reference, tmp_path):
    db = tmp_path / "p2b8.db"
    done = harness(*RUN, "--batch-size", "8", "--processes", "2", db=db)
    assert "12 samples (12 new" in done.stdout  # counted over both processes
    assert stored(db) == stored(reference)


@pytest.mark.slow
@pytest.mark.parametrize("processes, batch", [(1, 8), (2, 1), (3, 4)])
def test_every_process_count_and_batch_size_store_the_same_run(processes, batch, reference, tmp_path):
    db = tmp_path / "run.db"
    harness(*RUN, "--batch-size", str(batch), "--processes", str(processes), db=db)
    assert stored(db) == stored(reference)


def test_a_shard_is_partial_and_another_process_count_finishes_it(reference, tmp_path):
    db = tmp_path / "run.db"
    done = harness(*RUN, "--shard", "1/2", db=db)
    assert "shard 1/2 stored (6 new); 6 of 12 rows" in done.stdout
    runs, rows = stored(db)
    assert [r[1] for r in runs] == ["partial"] and len(rows) == 6
    again = harness(*RUN, "--shard", "1/2", db=db)  # the same shard again: nothing to compute, still partial
    assert "(0 new)" in again.stdout and stored(db) == (runs, rows)
    runs_list = harness("runs", db=db).stdout
    assert "partial" in runs_list
    finished = harness(*RUN, "--processes", "2", db=db)  # the rest, by two processes, into the same run
    assert "12 samples (6 new" in finished.stdout
    assert stored(db) == stored(reference)


@pytest.fixture(scope="module")
def even_m3cot(tmp_path_factory):
    """M3CoT's train rows with one rationale and one-letter answers: every example has as many loss
    tokens as every other, so a step's loss over 2 × 2 examples is the loss over the same 4 in one."""
    import datasets

    from harness.testing.fixtures import write_m3cot_fixture

    root = tmp_path_factory.mktemp("even-m3cot")
    ds = datasets.load_from_disk(str(write_m3cot_fixture(root / "raw", n=16)))
    train = ds["train"].map(lambda row: {"rationale": "The shape is plain. The colour is plain. So it is A.",
                                         "answer": "A"})
    out = root / "even"
    datasets.DatasetDict({"train": train, "test": ds["test"]}).save_to_disk(str(out))
    return out


def test_two_training_processes_give_the_loss_of_one_with_the_same_global_batch(tiny_model_dirs, even_m3cot,
                                                                                tmp_path):
    import json

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def train(processes: int, batch: int) -> dict:
        argv = ["train", "--method", "ivt-lr", "--bench", "m3cot", "--model", str(tiny_model_dirs["qwen2-vl"]),
                "--data", str(even_m3cot), "--out", str(tmp_path / f"p{processes}"), "--batch-size", str(batch),
                "--max-steps", "2", "--lora-r", "4", "--lora-dropout", "0", "--lr", "1e-2", "--top-k-patches", "4",
                "--init-token", "the", "--epochs-per-stage", "1", "--cpu", "--json", "--no-progress"]
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
                    if processes > 1 else [sys.executable])
        done = subprocess.run([*launcher, "-m", "harness.cli", *argv], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)  # one report: the main process's

    one, two = train(1, 4), train(2, 2)
    assert one["global_step"] == two["global_step"] == 2
    # Step 2's loss is after step 1's update: equal only if both saw the same examples and took the same step.
    assert two["last_loss"] == pytest.approx(one["last_loss"], rel=1e-4)


def test_shards_in_two_databases_merge_into_the_run_of_one_process(reference, tmp_path):
    for index in (0, 1):
        harness(*RUN, "--shard", f"{index}/2", db=tmp_path / f"node{index}.db")
    merged = tmp_path / "merged.db"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "merge", str(tmp_path / "node0.db"),
                           str(tmp_path / "node1.db"), "--into", str(merged)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert stored(merged) == stored(reference)
    with sqlite3.connect(merged) as a, sqlite3.connect(reference) as b:
        accuracy = "SELECT accuracy FROM scores WHERE kind = 'official'"
        assert a.execute(accuracy).fetchall() == b.execute(accuracy).fetchall()


def test_a_terminated_launch_keeps_its_rows_and_one_process_resumes_it(tmp_path):
    import signal
    import time

    db = tmp_path / "run.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)
    launched = subprocess.Popen([sys.executable, "-m", "harness.cli", *LONG, "--processes", "2", "--db",
                                 f"sqlite:///{db}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and launched.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(db, timeout=5) as conn:
                if conn.execute("SELECT count(*) FROM samples").fetchone()[0] >= 2:
                    break
        except sqlite3.OperationalError:
            pass  # not created yet
    assert launched.poll() is None, "the launch ended before it could be terminated"
    launched.send_signal(signal.SIGTERM)  # what Slurm sends at the time limit
    _, err = launched.communicate(timeout=120)
    assert launched.returncode == 143
    assert "Traceback" not in err
    told = [line for line in err.splitlines() if line.startswith("harness:")]
    assert told and all("terminated (SIGTERM); what was computed is stored" in line for line in told), err
    with sqlite3.connect(db) as conn:
        status, error = conn.execute("SELECT status, error FROM runs").fetchone()
        kept = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert status == "interrupted" and "re-run the same command to resume" in error, (status, error)
    assert 2 <= kept < 60
    resumed = harness(*LONG, db=db)  # one process now
    assert f"60 samples ({60 - kept} new" in resumed.stdout
    runs, rows = stored(db)
    assert [r[1:] for r in runs] == [("finished", 60)] and len({r[0] for r in rows}) == 60
