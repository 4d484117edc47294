"""Runs that died (owner, heartbeat, stale, takeover) and the SQLite WAL left behind by a command."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest

from harness.cli import main
from harness.run.reports import format_run, format_runs
from harness.run.store import RunInProgress, Store, stale_reason

FIELDS = {"method": "cot", "model": "org/Qwen2-VL-2B", "benchmark": "m3cot", "n_planned": 4}


def rows(uids):
    return [{"uid": u, "position": i, "prediction": "A", "extracted": "A", "gold": "A", "correct": True}
            for i, u in enumerate(uids)]


def wait_until(cond, timeout=20.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def sql(path, statement, *params):
    con = sqlite3.connect(path)
    try:
        con.execute(statement, params)
        con.commit()
    finally:
        con.close()


# A run in a child process, left running until it is killed.
CHILD = textwrap.dedent("""
    import sys, time
    from harness.run.store import Store
    store = Store(sys.argv[1], heartbeat_s=0.2)
    run_id, _, _ = store.start_run("key-1", {"method": "cot", "model": "org/Qwen2-VL-2B", "benchmark": "m3cot",
                                             "n_planned": 4})
    store.add_samples(run_id, [{"uid": u, "position": i} for i, u in enumerate(["a", "b"])])
    print(run_id, flush=True)
    time.sleep(600)
""")


@pytest.fixture
def child_run(tmp_path):
    """A child process that started a run (2 of 4 samples stored) and is still running it."""
    db = tmp_path / "h.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        run_id = int(proc.stdout.readline())
        yield {"db": db, "proc": proc, "run_id": run_id}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def runs_json(db, capsys):
    assert main(["runs", "--db", str(db), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- owner and heartbeat -------------------------------------------------------------------------------
def test_a_run_records_its_owner_and_its_heartbeat_ticks(tmp_path):
    store = Store(str(tmp_path / "h.db"), heartbeat_s=0.1)
    run_id, _, _ = store.start_run("k", FIELDS)
    run = store.run(run_id)
    me = psutil.Process()
    assert run["owner_host"] == socket.gethostname() and run["owner_pid"] == os.getpid()
    assert run["owner_started"] == pytest.approx(me.create_time(), abs=0.01)
    assert run["status"] == "running" and run["stale_reason"] is None and run["heartbeat_at"]

    first = run["heartbeat_at"]
    beat = store._res.heartbeats[run_id]
    assert wait_until(lambda: beat.beats >= 3), "the heartbeat thread did not tick"
    assert store.run(run_id)["heartbeat_at"] > first
    assert store.heartbeat(run_id) is True  # a beat on demand, too

    store.finish_run(run_id, status="finished", metrics={"n": 0}, official=None)
    assert not beat.is_alive(), "finish_run stops the heartbeat"
    stopped_at = store.run(run_id)["heartbeat_at"]
    time.sleep(0.3)
    assert store.run(run_id)["heartbeat_at"] == stopped_at
    assert store.heartbeat(run_id) is False  # no longer running
    store.close()


def test_a_failing_heartbeat_write_never_stops_the_run(tmp_path):
    from sqlalchemy import create_engine

    store = Store(str(tmp_path / "h.db"), heartbeat_s=0.05)
    run_id, _, _ = store.start_run("k", FIELDS)
    beat = store._res.heartbeats[run_id]
    good = beat.engine
    beat.engine = create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")  # every write fails
    before = beat.beats
    time.sleep(0.4)
    assert beat.is_alive() and beat.beats == before
    store.add_samples(run_id, rows(["a"]))  # the run itself goes on
    beat.engine = good
    assert wait_until(lambda: beat.beats > before)
    store.finish_run(run_id, status="finished", metrics=None, official=None)
    store.close()


def test_batches_refresh_the_heartbeat_and_add_samples_needs_no_thread(tmp_path):
    store = Store(str(tmp_path / "h.db"), heartbeat_s=0)  # no thread
    run_id, _, _ = store.start_run("k", FIELDS)
    assert run_id not in store._res.heartbeats
    old = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(tzinfo=None).isoformat(" ")
    sql(tmp_path / "h.db", "UPDATE runs SET heartbeat_at = ?, updated_at = ?", old, old)
    store.add_samples(run_id, rows(["a"]))
    beat = datetime.fromisoformat(store.run(run_id)["heartbeat_at"])
    assert datetime.now(timezone.utc) - beat < timedelta(minutes=1)
    store.close()


# -- stale ---------------------------------------------------------------------------------------------
def test_a_killed_run_shows_as_stale(child_run, capsys):
    db, proc, run_id = child_run["db"], child_run["proc"], child_run["run_id"]
    (run,) = runs_json(db, capsys)
    assert run["status"] == "running" and run["owner_pid"] == proc.pid and run["stale_reason"] is None

    kill(proc)
    (run,) = runs_json(db, capsys)
    assert run["id"] == run_id and run["status"] == "stale" and run["n_samples"] == 2
    assert f"pid {proc.pid}" in run["stale_reason"] and "is not running" in run["stale_reason"]

    assert main(["runs", "--db", str(db)]) == 0
    table = capsys.readouterr().out
    assert " stale " in table and "re-run the same command to resume it" in table
    assert main(["show", str(run_id), "--db", str(db)]) == 0
    assert f"run {run_id}  [stale]" in capsys.readouterr().out

    with Store(str(db), read_only=True) as ro:
        assert [r["id"] for r in ro.runs(status="stale")] == [run_id]
        assert ro.runs(status="running") == []
    stored = sqlite3.connect(db).execute("SELECT status FROM runs").fetchone()[0]
    assert stored == "running", "stale is how a dead run reads; the database is not changed by reading"


def test_resuming_a_stale_run_takes_it_over(child_run):
    db, proc, run_id = child_run["db"], child_run["proc"], child_run["run_id"]
    kill(proc)
    store = Store(str(db), heartbeat_s=0.1)
    rid, done, resumed = store.start_run("key-1", FIELDS)
    assert (rid, done, resumed) == (run_id, {"a", "b"}, True)
    run = store.run(run_id)
    assert run["status"] == "running" and run["stale_reason"] is None
    assert run["owner_pid"] == os.getpid() and run["owner_host"] == socket.gethostname()
    assert run["owner_started"] == pytest.approx(psutil.Process().create_time(), abs=0.01)
    assert wait_until(lambda: store._res.heartbeats[run_id].beats >= 1)
    store.finish_run(run_id, status="finished", metrics={"n": 2}, official=None)
    assert store.run(run_id)["status"] == "finished"
    store.close()


def test_a_live_run_in_another_process_is_not_taken_over(child_run):
    db, proc, run_id = child_run["db"], child_run["proc"], child_run["run_id"]
    store = Store(str(db))
    with pytest.raises(RunInProgress, match=f"run {run_id} with this configuration is already running "
                                            f"\\(pid {proc.pid} on"):
        store.start_run("key-1", FIELDS)
    assert isinstance(RunInProgress("x"), ValueError)  # the CLI prints it in one line, exit 2
    kill(proc)
    assert store.start_run("key-1", FIELDS)[0] == run_id
    store.close()


def test_a_reused_pid_is_stale(tmp_path):
    db = tmp_path / "h.db"
    store = Store(str(db), heartbeat_s=0)
    run_id, _, _ = store.start_run("k", FIELDS)
    assert store.run(run_id)["status"] == "running"
    sql(db, "UPDATE runs SET owner_started = owner_started - 3600")  # our pid, another process's start time
    run = store.run(run_id)
    assert run["status"] == "stale" and "another process" in run["stale_reason"]
    store.close()


def test_a_run_on_another_host_is_stale_once_its_heartbeat_is_old(tmp_path, monkeypatch):
    db = tmp_path / "h.db"
    store = Store(str(db), heartbeat_s=0)
    run_id, _, _ = store.start_run("k", FIELDS)
    sql(db, "UPDATE runs SET owner_host = 'gpu-node-7', owner_pid = 1")
    assert store.run(run_id)["status"] == "running"  # fresh heartbeat: alive, whatever pid 1 is here
    four = (datetime.now(timezone.utc) - timedelta(minutes=4)).replace(tzinfo=None).isoformat(" ")
    sql(db, "UPDATE runs SET heartbeat_at = ?, updated_at = ?", four, four)
    assert store.run(run_id)["status"] == "running"
    six = (datetime.now(timezone.utc) - timedelta(minutes=6)).replace(tzinfo=None).isoformat(" ")
    sql(db, "UPDATE runs SET heartbeat_at = ?, updated_at = ?", six, six)
    run = store.run(run_id)
    assert run["status"] == "stale" and "pid 1 on gpu-node-7" in run["stale_reason"]
    assert "more than 5 min" in run["stale_reason"]
    monkeypatch.setenv("HARNESS_STALE_AFTER_S", "3600")
    assert store.run(run_id)["status"] == "running"
    store.close()


def test_stale_reason_is_none_for_runs_that_are_not_running():
    long_ago = "2020-01-01T00:00:00+00:00"
    for status in ("finished", "failed", "interrupted", "superseded"):
        assert stale_reason({"status": status, "owner_host": "x", "owner_pid": 1, "updated_at": long_ago}) is None
    assert stale_reason({"status": "running", "updated_at": long_ago}).startswith("no heartbeat from its owner")


# -- databases from before the owner columns -----------------------------------------------------------
def test_an_old_database_reads_read_only_and_gains_the_columns_when_written(tmp_path, capsys):
    db = tmp_path / "old.db"
    store = Store(str(db), heartbeat_s=0)
    done, _, _ = store.start_run("k1", FIELDS)
    store.add_samples(done, rows(["a", "b"]))
    store.finish_run(done, status="finished", metrics={"n": 2, "accuracy": 100.0}, official=None)
    left, _, _ = store.start_run("k2", FIELDS)
    store.close()
    con = sqlite3.connect(db)
    for col in ("owner_host", "owner_pid", "owner_started", "heartbeat_at"):
        con.execute(f"ALTER TABLE runs DROP COLUMN {col}")
    con.execute("UPDATE runs SET updated_at = '2020-01-01 00:00:00.000000' WHERE id = ?", (left,))
    con.commit()
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    before = db.read_bytes()

    runs = runs_json(db, capsys)
    assert [(r["id"], r["status"]) for r in runs] == [(left, "stale"), (done, "finished")]
    assert runs[1]["n_samples"] == 2 and runs[1]["owner_pid"] is None
    assert main(["show", str(done), "--db", str(db)]) == 0 and "finished" in capsys.readouterr().out
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "runs.csv")]) == 0
    from leaderboard.queries import LeaderboardDB

    lb = LeaderboardDB(str(db))
    assert list(lb.runs_list()["status"]) == ["stale", "finished"] and lb.run(left)["status"] == "stale"
    lb.close()
    assert db.read_bytes() == before, "reading an old database changes nothing"

    Store(str(db)).close()  # a writer adds the missing columns
    cols = {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(runs)")}
    assert {"owner_host", "owner_pid", "owner_started", "heartbeat_at"} <= cols


def test_the_leaderboard_shows_stale_runs(child_run):
    from leaderboard import app as lb
    from leaderboard.queries import LeaderboardDB

    db, proc, run_id = child_run["db"], child_run["proc"], child_run["run_id"]
    kill(proc)
    board = LeaderboardDB(str(db))
    (label, value), = lb.run_choices(board)
    assert value == run_id and label.endswith("· stale")
    config, _, _, _, _, head = lb.run_page(board, run_id)
    assert config["status"] == "stale" and "stale" in head
    board.close()


# -- the WAL is checkpointed when a command ends ------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys
    from harness.run.store import Store
    store = Store(sys.argv[1])  # never closed: the process just ends
    for k in range(int(sys.argv[2])):
        run_id, _, _ = store.start_run(f"key-{k}", {"method": "cot", "model": "m", "benchmark": "b"})
        store.add_samples(run_id, [{"uid": f"u{i}", "position": i, "prompt": "x" * 500} for i in range(200)])
        store.finish_run(run_id, status="finished", metrics={"n": 200}, official=None)
    if len(sys.argv) > 3:
        import os
        os._exit(0)  # no atexit: what a kill would leave
""")


def test_a_finished_command_leaves_everything_in_the_db_file(tmp_path, capsys):
    db = tmp_path / "h.db"
    subprocess.run([sys.executable, "-c", WRITER, str(db), "5"], check=True, timeout=120)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["h.db"], f"WAL files left beside the database: {left}"
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(db, copy / "h.db")  # the .db alone
    runs = runs_json(copy / "h.db", capsys)
    assert len(runs) == 5 and all(r["status"] == "finished" and r["n_samples"] == 200 for r in runs)
    assert sorted(p.name for p in copy.iterdir()) == ["h.db"], "a reading command creates no file"


def test_a_process_that_skips_its_exit_handlers_keeps_its_wal(tmp_path):
    """The control: without the checkpoint at exit the runs sit in the -wal (and a copy of the .db
    alone would lose them), which is what the checkpoint fixes."""
    db = tmp_path / "h.db"
    subprocess.run([sys.executable, "-c", WRITER, str(db), "2", "no-exit"], check=True, timeout=120)
    assert (tmp_path / "h.db-wal").exists() and (tmp_path / "h.db-wal").stat().st_size > 0
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    con = sqlite3.connect(copy)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    n = con.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0
    con.close()
    assert n < 2
    with Store(str(db)) as store:  # the next writer takes the WAL in, and its close checkpoints it
        assert len(store.runs()) == 2
    assert not (tmp_path / "h.db-wal").exists()


def test_close_checkpoints_even_while_a_reader_has_the_file_open(tmp_path):
    db = tmp_path / "h.db"
    reader = Store(str(db), heartbeat_s=0)  # created it; stays open as another connection
    reader.runs()
    store = Store(str(db), heartbeat_s=0)
    for k in range(3):
        run_id, _, _ = store.start_run(f"k{k}", FIELDS)
        store.add_samples(run_id, rows(["a", "b", "c"]))
        store.finish_run(run_id, status="finished", metrics={"n": 3}, official=None)
    store.close()
    shutil.copy(db, tmp_path / "copy.db")
    with Store(str(tmp_path / "copy.db"), read_only=True) as copy:
        assert len(copy.runs()) == 3
    reader.close()
    assert not (tmp_path / "h.db-wal").exists()


def test_close_is_idempotent_and_a_collected_store_is_closed(tmp_path):
    import gc

    db = tmp_path / "h.db"
    store = Store(str(db))
    store.start_run("k", FIELDS)
    store.close()
    store.close()
    store = Store(str(db))
    finalizer = store._finalizer
    del store
    gc.collect()
    assert not finalizer.alive
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.db"]


def test_format_run_says_why_a_run_is_stale():
    run = {"id": 3, "status": "stale", "stale_reason": "its process (pid 9 on h) is not running", "metrics": None}
    assert "stale: its process (pid 9 on h) is not running" in format_run(run)
    assert "stale:" in format_runs([{**run, "method": "cot", "model": "m", "benchmark": "b"}])


def test_a_run_superseded_while_it_ran_stays_superseded(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    old, _, _ = store.start_run("k", FIELDS)
    new, _, resumed = store.start_run("k", FIELDS, fresh=True)  # another command's --fresh
    assert new != old and not resumed
    store.finish_run(old, status="finished", metrics={"n": 4}, official={})  # the old process ends later
    runs = {r["id"]: r for r in store.runs(include_superseded=True)}
    assert runs[old]["status"] == "superseded" and runs[old]["metrics"] == {"n": 4}
    assert [r["id"] for r in store.runs()] == [new]
    store.close()
