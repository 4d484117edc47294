"""A throwaway PostgreSQL server for the tests and for ``scripts/bench_pg.py``.

``start()`` finds PostgreSQL's binaries (``initdb`` on PATH, else ``/usr/lib/postgresql/*/bin``, newest
first; ``$HARNESS_PG_BIN`` names the folder explicitly), makes a cluster in a fresh temporary folder,
starts it on a free port of 127.0.0.1 (and a Unix socket in the same folder) and returns a
:class:`PgServer`; ``stop()`` shuts it down and deletes the folder. PostgreSQL refuses to run as root,
so as root every server command runs as the ``postgres`` system user (``runuser``) and the folder is
handed to that user.

Authentication: the Unix socket trusts everyone (the superuser ``postgres`` administers through it);
TCP on 127.0.0.1 asks for a password (scram-sha-256), so the roles the tests create log in the way a
team's server would be used. The server is tuned for throwaway data: no fsync, no synchronous commit.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "postgres"


class PgUnavailable(RuntimeError):
    """No PostgreSQL binaries (or no way to run them) here; the message says why."""


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    def ok(d: Path) -> bool:
        return all((d / b).is_file() and os.access(d / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres"))

    explicit = os.environ.get("HARNESS_PG_BIN")
    if explicit:
        return Path(explicit) if ok(Path(explicit)) else None
    on_path = shutil.which("initdb")
    if on_path:
        d = Path(on_path).resolve().parent  # Debian links /usr/local/bin/initdb to the versioned folder
        if ok(d):
            return d
    def version(p: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([\d.]+)/bin$", p)
        return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if ok(Path(d)):
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    root: Path  # the temporary folder: data/, the socket and the log
    port: int
    as_user: str | None  # the system user the server runs as (None: this process's user)
    _stopped: bool = field(default=False, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", self.as_user, "--", *cmd] if self.as_user else cmd

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run(self._cmd(*args), cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({out.returncode}): {out.stderr.strip()}\n{tail}")
        return out

    def url(self, user: str, password: str, database: str, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def admin(self, database: str = "postgres"):
        """A psycopg connection as the superuser over the Unix socket, in autocommit mode."""
        import psycopg

        return psycopg.connect(host=str(self.root), port=self.port, user=SUPERUSER, dbname=database,
                               autocommit=True)

    def execute(self, *statements: str, database: str = "postgres") -> None:
        with self.admin(database) as conn:
            for sql in statements:
                conn.execute(sql)

    def create_database(self, name: str, owner: str, password: str) -> str:
        """A fresh database owned by a new login role ``owner``; returns its URL (as that role)."""
        self.execute(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'", f"CREATE DATABASE {name} OWNER {owner}")
        return self.url(owner, password, name)

    def create_reader(self, database: str, role: str, password: str, *, owner: str) -> str:
        """A login role that may only read ``database`` (CONNECT, USAGE on public, SELECT on its tables,
        also those ``owner`` creates later); returns its URL."""
        self.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'",
                     f"REVOKE ALL ON DATABASE {database} FROM PUBLIC",
                     f"GRANT CONNECT ON DATABASE {database} TO {role}, {owner}")
        self.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                     f"GRANT USAGE ON SCHEMA public TO {role}",
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
                     f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
                     database=database)
        return self.url(role, password, database)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PgServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(*, settings: dict[str, str] | None = None) -> PgServer:
    """A running throwaway server (see the module docstring); raises :class:`PgUnavailable` when there
    are no binaries or no way to run them, RuntimeError when the server does not start."""
    bindir = find_bindir()
    if bindir is None and os.environ.get("HARNESS_PG_BIN"):
        raise PgUnavailable(f"$HARNESS_PG_BIN={os.environ['HARNESS_PG_BIN']} does not hold initdb, pg_ctl and postgres")
    if bindir is None:
        raise PgUnavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in "
                            "/usr/lib/postgresql/*/bin; install Debian's `postgresql` package")
    as_user = None
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise PgUnavailable("running as root and there is no `postgres` system user to run the server as") from None
        if shutil.which("runuser") is None:
            raise PgUnavailable("running as root and `runuser` is missing to run the server as postgres")
        as_user = SUPERUSER
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))  # short: a Unix socket path has ~100 characters
    if as_user:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    conf = {"listen_addresses": "127.0.0.1", "fsync": "off", "synchronous_commit": "off",
            "full_page_writes": "off", "max_connections": "100", "shared_buffers": "128MB",
            "deadlock_timeout": "200ms", **(settings or {})}
    server = None
    try:
        for attempt in range(5):  # another process may take the free port before the server does
            server = PgServer(bindir, root, _free_port(), as_user)
            if attempt == 0:
                server._run("initdb", "-D", str(server.data), "-U", SUPERUSER, "--auth-local=trust",
                            "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync", timeout=120)
            opts = " ".join([f"-k {root}", f"-p {server.port}", *(f"-c {k}={v}" for k, v in conf.items())])
            try:
                server._run("pg_ctl", "-D", str(server.data), "-l", str(server.log), "-o", opts, "-w",
                            "-t", "60", "start", timeout=90)
                return server
            except RuntimeError:
                if attempt == 4 or "already in use" not in (server.log.read_text(errors="replace")
                                                            if server.log.exists() else ""):
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")
    except BaseException:
        if server is not None:
            server.stop()
        else:
            shutil.rmtree(root, ignore_errors=True)
        raise
