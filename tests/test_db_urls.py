"""A bad --db is one line, exit code 2, and nothing is written: for reading commands (`harness runs`,
`show`, `export`, `leaderboard`), for `harness run` (checked before the model loads) and for `Store`."""
from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.run.store import DatabaseNotFound, Store, StoreError, check_url


def _foreign(root: Path) -> str:
    con = sqlite3.connect(root / "other.db")
    con.execute("CREATE TABLE bookmarks (url TEXT)")
    con.commit()
    con.close()
    return str(root / "other.db")


def _not_sqlite(root: Path) -> str:
    (root / "notes.db").write_text("these are my notes, not a database\n")
    return str(root / "notes.db")


def _folder(root: Path) -> str:
    (root / "results").mkdir()
    return str(root / "results")


def _under_a_file(root: Path) -> str:
    (root / "a-file").write_text("x")
    return str(root / "a-file" / "harness.db")


# name → (make the --db value in a folder, message fragment, reading too?)
BOTH = [
    ("malformed sqlite URL", lambda r: "sqlite:/:/bad::url", "is not a valid database URL"),
    ("malformed URL", lambda r: "postgresql://user@host:notaport/db", "is not a valid database URL"),
    ("unknown dialect", lambda r: "nosuchdb://host/db", "unknown database kind 'nosuchdb'"),
    ("postgres:// spelling", lambda r: "postgres://u@h/db", "PostgreSQL is postgresql://"),
    ("unknown driver", lambda r: "postgresql+nodriver://u@h/db", "unknown driver 'nodriver' for postgresql"),
    ("async driver", lambda r: "postgresql+asyncpg://u@h/db", "asyncio driver"),
    ("a folder", _folder, "is a folder, not a database file"),
    ("not SQLite", _not_sqlite, "is not an SQLite database"),
]
READ_ONLY = [
    ("missing file", lambda r: str(r / "none.db"), "does not exist"),
    ("missing file URL", lambda r: f"sqlite:///{r / 'none.db'}", "does not exist"),
    ("empty file", lambda r: (r / "empty.db").touch() or str(r / "empty.db"), "not a harness results database (an empty file)"),
    ("SQLite without our schema", _foreign, "not a harness results database"),
]
WRITING = [
    ("SQLite of something else", _foreign, "an SQLite database of something else"),
    ("parent is a file", _under_a_file, "a-file is a file, not a folder"),
]

PG_MISSING = []
for driver, module, package in (("psycopg", "psycopg", 'pip install "psycopg[binary]"'),
                                 ("psycopg2", "psycopg2", "pip install psycopg2-binary")):
    try:
        __import__(module)
    except ImportError:
        PG_MISSING.append((f"postgresql+{driver} without its driver", lambda r, d=driver: f"postgresql+{d}://u:pw@h/db",
                           package))
try:
    import psycopg  # noqa: F401
except ImportError:
    PG_MISSING.append(("postgresql:// without a driver", lambda r: "postgresql://u:secret@h/db",
                       "postgresql+psycopg://"))


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO ")]
    assert len(err) == 1 and err[0].startswith("harness: error: "), err
    return err[0]


@pytest.fixture
def room(tmp_path, monkeypatch):
    root = tmp_path / "room"
    root.mkdir()
    monkeypatch.chdir(root)  # a relative stray file would land here
    monkeypatch.delenv("HARNESS_DB", raising=False)
    return root


CASES_READ = BOTH + READ_ONLY + PG_MISSING
CASES_WRITE = BOTH + WRITING + PG_MISSING


@pytest.mark.parametrize("name,make,fragment", CASES_READ, ids=[c[0] for c in CASES_READ])
@pytest.mark.parametrize("command", [["runs"], ["runs", "--json"], ["show", "1"],
                                     ["export", "--out", "out.csv"]])
def test_reading_commands(room, capsys, command, name, make, fragment):
    db = make(room)
    before = snapshot(room)
    assert main([*command, "--db", db]) == 2
    line = one_error_line(capsys)
    assert fragment in line, line
    assert "secret" not in line and "Traceback" not in line
    assert snapshot(room) == before, f"{name}: something was written"


@pytest.mark.parametrize("name,make,fragment", CASES_WRITE, ids=[c[0] for c in CASES_WRITE])
def test_store_for_writing(room, name, make, fragment):
    db = make(room)
    before = snapshot(room)
    with pytest.raises(StoreError, match=None) as info:
        check_url(db)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError) as info:
        Store(db)
    assert fragment in str(info.value)
    assert snapshot(room) == before, f"{name}: something was written"


@pytest.fixture(scope="module")
def m3cot_fixture(tmp_path_factory):
    from harness.testing.fixtures import write_m3cot_fixture

    return str(write_m3cot_fixture(tmp_path_factory.mktemp("m3cot") / "m3cot", n=4, seed=0))


RUN_CASES = [c for c in CASES_WRITE if c[0] in ("malformed sqlite URL", "unknown dialect", "a folder", "not SQLite",
                                                 "SQLite of something else", "parent is a file")] + PG_MISSING


@pytest.mark.parametrize("name,make,fragment", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_harness_run_checks_the_db_before_the_model(room, capsys, m3cot_fixture, name, make, fragment):
    db = make(room)
    before = snapshot(room)
    # The model does not exist: loading it would fail with another error, so the store's message
    # proves the --db was checked first.
    argv = ["run", "--method", "direct", "--bench", "m3cot", "--model", str(room / "no-such-model"),
            "--data", m3cot_fixture, "--limit", "1", "--no-progress", "--db", db]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert fragment in line, line
    assert snapshot(room) == before, f"{name}: something was written"


def test_the_stray_file_of_a_malformed_url_is_gone(room):
    """Before: `--db sqlite:/:/bad::url` was taken as a file path and created sqlite:/:/bad::url."""
    with pytest.raises(StoreError):
        Store("sqlite:/:/bad::url")
    assert list(room.iterdir()) == []
    assert Path(check_url("run:1.db")).name == "run:1.db"  # a colon in a plain file name is still a path


def test_an_immutable_or_read_only_file_is_refused_for_writing(room):
    db = room / "frozen.db"
    Store(str(db)).close()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
            pytest.skip("root, and chattr +i is not available here: file modes do not stop root")
        undo = ["chattr", "-i", str(db)]
    else:
        db.chmod(0o444)
        undo = None
    try:
        before = db.read_bytes()
        with pytest.raises(StoreError, match="is read-only"):
            Store(str(db))
        assert db.read_bytes() == before
        with Store(str(db), read_only=True) as ro:  # reading it still works
            assert ro.runs() == []
    finally:
        if undo:
            subprocess.run(undo, check=True)


def test_a_read_only_url_is_refused_for_writing(room):
    Store(str(room / "ro.db")).close()
    before = snapshot(room)
    with pytest.raises(StoreError, match="is read-only"):
        Store(f"sqlite:///file:{room / 'ro.db'}?mode=ro&uri=true")
    assert snapshot(room) == before


def test_an_empty_file_is_a_fine_new_database(room):
    (room / "new.db").touch()
    with Store(str(room / "new.db")) as store:
        assert store.runs() == []
    with Store(str(room / "new.db"), read_only=True) as ro:  # now it has the schema
        assert ro.runs() == []


def test_a_missing_database_is_also_a_file_not_found_error(room):
    with pytest.raises(FileNotFoundError):
        Store(str(room / "none.db"), read_only=True)
    with pytest.raises(DatabaseNotFound):
        check_url(str(room / "none.db"), write=False)
    assert list(room.iterdir()) == []


def test_a_good_url_is_resolved_and_nothing_is_created_by_checking(room, monkeypatch):
    assert check_url("h.db") == "sqlite:///h.db"
    assert check_url(f"sqlite:///{room / 'sub' / 'h.db'}") == f"sqlite:///{room / 'sub' / 'h.db'}"
    monkeypatch.setenv("HARNESS_DB", "sqlite:/bad:")
    with pytest.raises(StoreError, match=r"^\$HARNESS_DB 'sqlite:/bad:' is not a valid database URL"):
        check_url(None)
    assert list(room.iterdir()) == []


def test_the_leaderboard_command_checks_its_db_first(room, capsys):
    assert main(["leaderboard", "--db", "sqlite:/:/bad::url"]) == 2
    assert "is not a valid database URL" in one_error_line(capsys)
    assert main(["leaderboard", "--db", str(room / "none.db")]) == 2
    assert "does not exist" in one_error_line(capsys)
    assert list(room.iterdir()) == []


def test_a_cli_subprocess_prints_one_line(room):
    out = subprocess.run([sys.executable, "-m", "harness.cli", "runs", "--db", "sqlite:/:/bad::url"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "not a valid database URL" in out.stderr
    assert list(room.iterdir()) == []


def test_port_helpers_do_not_need_a_database():
    from leaderboard.ports import check_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=f"port {port} on 127.0.0.1 is already in use.*pass --port \\d+"):
            check_port("127.0.0.1", port)
    with pytest.raises(ValueError, match="not a port number"):
        check_port("127.0.0.1", 70000)
