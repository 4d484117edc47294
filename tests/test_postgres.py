"""`--db postgresql+psycopg://...` against a real PostgreSQL server that these tests start (tests/pg_server.py):
the store round trip, two processes creating one schema and writing one run at once, the leaderboard
reading through a read-only session and a SELECT-only role, one-line errors for a server that cannot be
reached, and `harness run` end to end.

Without PostgreSQL's binaries or the psycopg driver these tests skip, saying why; with
HARNESS_REQUIRE_POSTGRES=1 (CI, see .ci/run) they fail instead.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest
from sqlalchemy import insert, inspect
from sqlalchemy.exc import DBAPIError

import pg_server
from harness.cli import main
from harness.run.store import Run, Store, StoreError

REQUIRED = os.environ.get("HARNESS_REQUIRE_POSTGRES") == "1"
PASSWORD = "s3cret-pw"

FIELDS = {"method": "cot", "model": "org/Qwen2.5-VL-3B", "benchmark": "m3cot", "split": "test",
          "subset": {"limit": 10, "seed": 0}, "n_planned": 10, "device": "cpu"}


def rows(uids, start=0):
    return [{"uid": u, "position": start + i, "category": "sci", "prediction": f"ans {u}",
             "answer": "A", "extracted": "A", "gold": "A", "correct": i % 2 == 0,
             "generated_tokens": 10, "input_tokens": 5, "latency_s": 0.5, "extra": {"k": [1]}}
            for i, u in enumerate(uids)]


def unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (HARNESS_REQUIRE_POSTGRES=1: PostgreSQL tests must run here)", pytrace=False)
    pytest.skip(reason)


def need_driver() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable('the psycopg driver is not installed: pip install -e ".[postgres]"')


@pytest.fixture(scope="session")
def pg():
    need_driver()
    try:
        server = pg_server.start()
    except pg_server.PgUnavailable as exc:
        unavailable(str(exc))
    yield server
    server.stop()


_names = itertools.count()


@pytest.fixture()
def fresh_url(pg):
    """A new, empty database owned by a new role; its URL as that role (password over TCP)."""
    n = next(_names)
    return pg.create_database(f"harness_{n}", f"writer_{n}", PASSWORD)


def wait_all(procs, timeout=60):
    out = []
    for p in procs:
        o, e = p.communicate(timeout=timeout)
        assert p.returncode == 0, e
        out.append(o)
    return out


def started_together(code: str, *argvs: list[str]) -> list[subprocess.Popen]:
    """Subprocesses of ``code``, each released only once all have imported and printed "ready"
    (the work then starts within a millisecond or so in all of them)."""
    prelude = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
    procs = [subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code), *argv], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in argvs]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    return procs


# -- 1. the store ------------------------------------------------------------------------------------

def test_the_store_round_trip(fresh_url):
    with Store(fresh_url) as store:
        assert store.engine.dialect.name == "postgresql" and store.runs() == []
        rid, done, resumed = store.start_run("k1", FIELDS)
        assert (done, resumed) == (set(), False)
        store.add_samples(rid, rows(["a", "b"]))
        store.add_samples(rid, rows(["b", "c"], start=1))  # a retry overlapping a stored batch
        with pytest.raises(Exception):  # NOT NULL: the whole batch is refused
            store.add_samples(rid, rows(["d", "e"], start=3) + [{"uid": "f", "position": None}])
        store.finish_run(rid, status="interrupted", metrics=None, official=None, error="ctrl-c")

        rid2, done2, resumed2 = store.start_run("k1", {**FIELDS, "device": "cuda:0"})
        assert (rid2, done2, resumed2) == (rid, {"a", "b", "c"}, True)
        store.finish_run(rid, status="finished", metrics={"n": 3, "accuracy": 66.67}, official={"overall": {"total": 3}},
                         peak_memory_mb=12.5)
        assert store.add_score(rid, kind="official", scorer="m3cot:official", accuracy=66.67,
                               details={"overall": {"total": 3, "accuracy": 66.67}}) > 0
        store.add_score(rid, kind="official", scorer="m3cot:official", accuracy=70.0, details={})  # replaces it

        other, _, _ = store.start_run("k2", {**FIELDS, "benchmark": "mmstar"})
        store.add_samples(other, rows(["a"]))  # the same uid in another run is another row
        store.finish_run(other, status="partial", metrics=None, official=None)

    with Store(fresh_url, read_only=True) as ro:
        runs = ro.runs()
        assert [r["id"] for r in runs] == [other, rid]
        run = ro.run(rid)
        assert run["status"] == "finished" and run["device"] == "cuda:0" and run["n_samples"] == 3
        assert run["metrics"] == {"n": 3, "accuracy": 66.67} and run["peak_memory_mb"] == 12.5
        assert run["subset"] == {"limit": 10, "seed": 0} and run["error"] is None
        assert datetime.fromisoformat(run["finished_at"]).tzinfo == timezone.utc
        assert ro.run(other)["status"] == "partial" and ro.runs(benchmark="mmstar")[0]["n_samples"] == 1
        got = ro.samples(rid)
        assert [s["uid"] for s in got] == ["a", "b", "c"] and [s["position"] for s in got] == [0, 1, 2]
        assert got[0]["extra"] == {"k": [1]} and got[0]["correct"] is True and got[1]["correct"] is False
        assert got[0]["category"] == "sci" and got[0]["error"] is None
        json.dumps(got)
        assert [s["uid"] for s in ro.iter_samples(rid, batch=2)] == ["a", "b", "c"]
        (score,) = ro.scores(rid)
        assert score["kind"] == "official" and score["accuracy"] == 70.0


def test_defaults_of_omitted_sample_fields_are_kept(fresh_url):
    """Rows with different fields in one batch (the PostgreSQL insert is a bulk ON CONFLICT insert)."""
    with Store(fresh_url) as store:
        rid, _, _ = store.start_run("k", FIELDS)
        store.add_samples(rid, [{"uid": "x", "position": 0}, {"uid": "y", "position": 1, "error": "boom"},
                                {"uid": "x", "position": 2}])  # a uid twice in one batch: the first wins
        a, b = store.samples(rid)
        assert (a["uid"], a["position"], a["category"], a["extra"], a["error"]) == ("x", 0, "", {}, None)
        assert b["error"] == "boom" and b["created_at"]


def test_two_processes_create_the_schema_of_a_fresh_database_at_once(pg):
    code = """
        from harness.run.store import Store
        with Store(sys.argv[1]) as s:
            assert s.runs() == []
    """
    for _ in range(2):  # two fresh databases (without the lock, each round fails)
        n = next(_names)
        url = pg.create_database(f"race_{n}", f"racer_{n}", PASSWORD)
        wait_all(started_together(code, [url], [url]))
        with Store(url, read_only=True) as ro:
            tables = set(inspect(ro.engine).get_table_names())
            assert {"runs", "samples", "scores", "reported_results", "text_side_metrics"} <= tables
            indexes = {i["name"] for i in inspect(ro.engine).get_indexes("samples")}
            assert "ix_samples_run_position" in indexes
    # A database from before the owner columns and the paging index: both processes bring it up to date.
    pg.execute("ALTER TABLE runs DROP COLUMN owner_host, DROP COLUMN owner_pid, DROP COLUMN heartbeat_at",
               "DROP INDEX ix_samples_run_position", database=url.rsplit("/", 1)[1])
    with Store(url, read_only=True) as ro:  # read-only it is read as it is, nothing added
        assert "heartbeat_at" not in ro.run_columns
    wait_all(started_together(code, [url], [url]))
    with Store(url, read_only=True) as ro:
        assert {"owner_host", "owner_pid", "heartbeat_at"} <= ro.run_columns
        assert "ix_samples_run_position" in {i["name"] for i in inspect(ro.engine).get_indexes("samples")}


# -- 2. two processes writing one run ------------------------------------------------------------------

WRITER = """
    from harness.run.store import Store
    url, run_id, me, batches = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    with Store(url) as s:
        for i in range(batches):
            own = [{"uid": f"{me}-{i}-{j}", "position": 1000 * (me == "q") + 2 * i + j} for j in range(2)]
            # The same shared uids at the same time in both, in opposite orders within the batch: each
            # may wait on the other's uncommitted row (a deadlock the server breaks; the loser redoes it).
            shared = [{"uid": f"shared-{i}-{j}", "position": 5000 + 2 * i + j, "extra": {"by": me}} for j in range(2)]
            s.add_samples(run_id, own + (shared if me == "p" else shared[::-1]))
    print("done")
"""


def test_two_processes_write_one_run_at_once(fresh_url):
    batches = 120
    with Store(fresh_url) as store:
        rid, _, _ = store.start_run("k", FIELDS)
        procs = started_together(WRITER, [fresh_url, str(rid), "p", str(batches)],
                                 [fresh_url, str(rid), "q", str(batches)])
        assert [o.strip() for o in wait_all(procs)] == ["done", "done"]
        got = store.samples(rid)
        uids = [s["uid"] for s in got]
        expected = {f"{w}-{i}-{j}" for w in ("p", "q", "shared") for i in range(batches) for j in range(2)}
        assert len(uids) == len(set(uids)) == len(expected) == 6 * batches
        assert set(uids) == expected
        assert store.run(rid)["n_samples"] == 6 * batches
        by = {s["extra"]["by"] for s in got if s["uid"].startswith("shared-")}
        assert by <= {"p", "q"}  # each shared uid stored once, by whichever process came first


def test_a_batch_the_server_aborts_as_a_deadlock_is_redone(pg, fresh_url):
    """Made to happen: another session holds uid b uncommitted, the store's batch [a, b] waits on it,
    then the other session inserts a. The store's side detects the deadlock first (its
    deadlock_timeout is 200 ms, the other's 10 s) and is aborted; add_samples redoes the batch and
    returns normally, skipping the uids the other session committed meanwhile."""
    import threading

    database = fresh_url.rsplit("/", 1)[1]
    deadlocks = pg.log.read_text().count("deadlock detected")
    with Store(fresh_url) as store:
        rid, _, _ = store.start_run("k", FIELDS)
        errors: list[BaseException] = []

        def write():
            try:
                store.add_samples(rid, rows(["a", "b"]))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        add = "INSERT INTO samples (run_id, uid, position, created_at, extra) VALUES (%s, %s, %s, now(), '{}')"
        with pg.admin(database) as other, pg.admin(database) as watch:
            other.execute("SET deadlock_timeout = '10s'")
            with other.transaction():
                other.execute(add, (rid, "b", 1))
                writer = threading.Thread(target=write)
                writer.start()
                for _ in range(400):  # until the store waits on b
                    if watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                                     "wait_event_type = 'Lock'", (database,)).fetchone()[0]:
                        break
                    writer.join(0.025)
                else:
                    pytest.fail("the store never waited on the uncommitted row")
                other.execute(add, (rid, "a", 0))  # waits until the store's transaction is aborted
            writer.join(30)
        assert not writer.is_alive() and errors == []
        assert sorted(s["uid"] for s in store.samples(rid)) == ["a", "b"]
    assert pg.log.read_text().count("deadlock detected") > deadlocks


# -- 3. the leaderboard, read-only --------------------------------------------------------------------

@pytest.fixture()
def written(pg, fresh_url):
    """A database with two finished, scored runs and one running; plus a SELECT-only role's URL."""
    with Store(fresh_url) as store:
        ids = []
        for bench, n in (("m3cot", 5), ("mmstar", 3)):
            rid, _, _ = store.start_run(f"k-{bench}", {**FIELDS, "benchmark": bench})
            store.add_samples(rid, rows([f"u{i}" for i in range(n)]))
            store.finish_run(rid, status="finished", metrics={"n": n, "mean_generated_tokens": 10.0},
                             official={"overall": {"total": n, "accuracy": 60.0}})
            store.add_score(rid, kind="official", scorer=f"{bench}:official", accuracy=60.0,
                            details={"overall": {"total": n, "accuracy": 60.0}})
            ids.append(rid)
        running, _, _ = store.start_run("k-running", FIELDS)
        store.add_samples(running, rows(["r0"]))
    database = fresh_url.rsplit("/", 1)[1]
    owner = fresh_url.split("://", 1)[1].split(":", 1)[0]
    n = database.rsplit("_", 1)[1]
    reader = pg.create_reader(database, f"reader_{n}", PASSWORD, owner=owner)
    return fresh_url, reader, ids, running


def _refused_on_server(engine, sql, *params) -> str:
    with pytest.raises(DBAPIError) as info:
        with engine.begin() as conn:
            conn.execute(sql, *params) if not isinstance(sql, str) else conn.exec_driver_sql(sql)
    return getattr(info.value.orig, "sqlstate", None)


def test_a_read_only_store_refuses_writes_on_the_server(written):
    url, _, ids, _ = written
    with Store(url, read_only=True) as ro:
        row = {"key": "x", "status": "running", "method": "m", "model": "x", "benchmark": "b",
               "started_at": datetime.now(timezone.utc), "updated_at": datetime.now(timezone.utc)}
        # The role owns the database and could write: only the READ ONLY session stops it (25006).
        assert _refused_on_server(ro.engine, insert(Run.__table__), row) == "25006"
        assert _refused_on_server(ro.engine, "UPDATE runs SET status = 'failed'") == "25006"
        assert _refused_on_server(ro.engine, "CREATE TABLE intruder (a int)") == "25006"
        with pytest.raises(PermissionError):
            ro.add_samples(ids[0], rows(["zz"]))
        assert len(ro.runs()) == 3  # reading still works, on a connection that refused a write before
    with Store(url) as store:
        assert [r["status"] for r in store.runs()] == ["running", "finished", "finished"]


def test_a_read_only_store_creates_nothing_in_a_fresh_database(pg, fresh_url):
    with pytest.raises(StoreError, match="not a harness results database"):
        Store(fresh_url, read_only=True)
    with pg.admin(fresh_url.rsplit("/", 1)[1]) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


@pytest.mark.parametrize("who", ["owner", "SELECT-only role"])
def test_the_leaderboard_reads_postgresql_read_only(written, who):
    from leaderboard.queries import Filters, LeaderboardDB

    owner_url, reader_url, ids, running = written
    db = LeaderboardDB(owner_url if who == "owner" else reader_url)
    try:
        table = db.table(Filters())
        assert sorted(table["run_id"].dropna().astype(int)) == sorted(ids)
        assert set(table["benchmark"]) == {"m3cot", "mmstar"} and set(table["kind"]) == {"official"}
        assert list(table["accuracy"]) == [60.0, 60.0] and sorted(table["n"]) == [3, 5]
        assert list(db.table(Filters.make(benchmarks=["mmstar"]))["run_id"]) == [ids[1]]
        listed = db.runs_list()
        assert list(listed["id"]) == [running, ids[1], ids[0]] and listed["status"].iloc[0] == "running"
        page, total = db.samples(ids[0], offset=2, limit=2)
        assert total == 5 and list(page["uid"]) == ["u2", "u3"]
        assert db.samples(ids[0], wrong_only=True)[1] == 2
        assert db.run(ids[0])["scores"][0]["accuracy"] == 60.0
        assert db.choices()["benchmarks"] == ["m3cot", "mmstar"]
        assert _refused_on_server(db.engine, "DELETE FROM samples") in ("25006", "42501")
    finally:
        db.close()


def test_a_select_only_role_can_read_but_never_write(written):
    _, reader_url, ids, _ = written
    with Store(reader_url, read_only=True) as ro:
        assert [r["id"] for r in ro.runs()][1:] == ids[::-1]
        assert len(ro.samples(ids[0])) == 5
    # Opened for writing, the role finds the schema complete (no CREATE/ALTER is tried) but the
    # server refuses its first write: insufficient privilege (42501).
    with Store(reader_url) as rw:
        assert _refused_on_server(rw.engine, "DELETE FROM samples") == "42501"
        # ... and through the store it is one line naming the fix, not a driver traceback
        with pytest.raises(StoreError, match="refused the write .*INSERT and UPDATE") as caught:
            rw.add_samples(ids[0], [{"uid": "new", "position": 99}])
        assert len(str(caught.value).splitlines()) == 1


# -- 4. one-line errors -----------------------------------------------------------------------------

UNREACHABLE = f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/db"


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO ")]
    assert len(err) == 1 and err[0].startswith("harness: error: "), err
    return err[0]


@pytest.mark.parametrize("read_only", [False, True])
def test_an_unreachable_server_is_one_line_naming_the_fix(read_only):
    need_driver()
    with pytest.raises(StoreError) as info:
        Store(UNREACHABLE, read_only=read_only)
    msg = str(info.value)
    assert "\n" not in msg and PASSWORD not in msg
    assert "cannot reach the PostgreSQL server at 127.0.0.1:1" in msg
    assert "check that the server is running" in msg and "Connection refused" in msg


def test_a_wrong_password_or_database_is_one_line(pg, fresh_url):
    bad_pw = fresh_url.replace(f":{PASSWORD}@", ":wrong@")
    with pytest.raises(StoreError, match="refused the login .*check the user and password") as info:
        Store(bad_pw)
    assert "wrong" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(StoreError, match="has no database 'nope'; create it") as info:
        Store(fresh_url.rsplit("/", 1)[0] + "/nope", read_only=True)
    assert "\n" not in str(info.value)


def test_a_missing_driver_names_the_package(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(StoreError, match=r'driver psycopg is not installed .*pip install "psycopg\[binary\]"'):
        Store(UNREACHABLE)
    assert main(["runs", "--db", UNREACHABLE]) == 2
    assert 'pip install "psycopg[binary]"' in one_error_line(capsys)


def test_harness_runs_on_an_unreachable_server_exits_2_with_one_line(capsys):
    need_driver()
    assert main(["runs", "--db", UNREACHABLE]) == 2
    line = one_error_line(capsys)
    assert "cannot reach the PostgreSQL server at 127.0.0.1:1" in line and PASSWORD not in line
    out = subprocess.run([sys.executable, "-m", "harness.cli", "runs", "--db", UNREACHABLE],
                         capture_output=True, text=True, timeout=120)
    err = [line for line in out.stderr.splitlines() if not line.startswith("INFO ")]
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
    assert len(err) == 1 and "check that the server is running" in err[0], out.stderr


# -- 5. harness run end to end ------------------------------------------------------------------------

def test_harness_run_stores_on_postgresql(tiny_model_dirs, tmp_path, fresh_url, capsys):
    from harness.testing.fixtures import write_m3cot_fixture

    data = str(write_m3cot_fixture(tmp_path / "m3cot", n=4, seed=0))
    argv = ["run", "--no-progress", "--method", "direct", "--bench", "m3cot", "--model",
            str(tiny_model_dirs["qwen2-vl"]), "--data", data, "--limit", "4", "--batch-size", "2",
            "--max-new-tokens", "4", "--db", fresh_url]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["runs", "--db", fresh_url, "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["status"] == "finished" and run["method"] == "direct" and run["benchmark"] == "m3cot"
    assert run["n_samples"] == 4
    assert main(["runs", "--db", fresh_url]) == 0
    assert "direct" in capsys.readouterr().out
    with Store(fresh_url, read_only=True) as ro:
        assert len(ro.samples(run["id"])) == 4
        assert [s["kind"] for s in ro.scores(run["id"])] == ["official"]
    assert main(argv) == 0  # the same command again: resumed, nothing recomputed or duplicated
    with Store(fresh_url, read_only=True) as ro:
        assert [r["n_samples"] for r in ro.runs()] == [4]


def test_two_processes_of_one_launch_store_one_run_on_postgresql(tiny_model_dirs, tmp_path, fresh_url):
    """`harness run --processes 2` (torchrun, gloo): both processes write into rank 0's run on the
    server, and the stored rows are those of one process."""
    from harness.testing.fixtures import write_m3cot_fixture

    data = str(write_m3cot_fixture(tmp_path / "m3cot", n=6, seed=0))
    argv = ["run", "--no-progress", "--method", "direct", "--bench", "m3cot", "--model",
            str(tiny_model_dirs["qwen2-vl"]), "--data", data, "--batch-size", "2", "--max-new-tokens", "4"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = f"sqlite:///{tmp_path / 'one.db'}"
    for db, extra in ((one, []), (fresh_url, ["--processes", "2"])):
        done = subprocess.run([sys.executable, "-m", "harness.cli", *argv, *extra, "--db", db], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    columns = ("position", "uid", "prediction", "answer", "correct", "generated_tokens")
    with Store(one, read_only=True) as a, Store(fresh_url, read_only=True) as b:
        (run_a,), (run_b,) = a.runs(), b.runs()
        assert run_b["status"] == "finished" and run_b["n_samples"] == 6
        rows_a = sorted(tuple(r[c] for c in columns) for r in a.samples(run_a["id"]))
        rows_b = sorted(tuple(r[c] for c in columns) for r in b.samples(run_b["id"]))
        assert rows_a == rows_b
