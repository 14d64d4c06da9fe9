"""A PostgreSQL server of a test's own, on a free port, that the test may stop and start again (an outage).

The shared server at 127.0.0.1:5432 serves every agent's tests and must never be stopped; a test that needs
the database to go away starts one of these instead:

    from private_postgres import private_postgres  # noqa: F401  (fixture)

    def test_x(private_postgres: PrivatePostgres) -> None:
        url = private_postgres.create_database()
        private_postgres.stop()    # connections are cut, new ones refused
        private_postgres.start()   # same port, same data

initdb / pg_ctl refuse to run as root, so as root they run as the `postgres` user, on a data directory that
user owns (made under the system temp folder, removed at the end). The server listens on 127.0.0.1 only,
with trust authentication and durability off (a test's data need not survive a crash).
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

BIN_DIRS = [os.environ.get("GENQ_TEST_POSTGRES_BIN", ""), "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin"]
SERVER_USER = "postgres"  # the server's OS user when the tests run as root, and the database superuser


def _bin_dir() -> Path | None:
    for d in BIN_DIRS:
        if d and (Path(d) / "pg_ctl").exists():
            return Path(d)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """One private server: `start()`, `stop()`, `url(database)`, `create_database()`; `destroy()` at the end."""

    def __init__(self, bin_dir: Path, port: int | None = None):
        self.bin_dir = bin_dir
        self.port = port or _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="genq-test-pg-"))
        self.data = self.root / "data"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, SERVER_USER, SERVER_USER)
        self.root.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SERVER_USER, "-E", "UTF8",
                  "--no-sync", "--no-instructions")

    def _run(self, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / program), *args]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}\n{done.stderr}")
        return done

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self, timeout: float = 60) -> None:
        """Start the server (again) on its port and wait until it accepts connections."""
        options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   "-c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                  "-w", "-t", str(int(timeout)), "start", timeout=timeout + 10)
        deadline = time.monotonic() + timeout
        while True:  # pg_ctl -w waited for the socket; make sure TCP answers too
            try:
                psycopg.connect(self._conninfo("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` cuts every connection at once (clients see their connection end), `immediate`
        is a crash without shutdown."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def _conninfo(self, database: str) -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def url(self, database: str = "postgres") -> str:
        """A DATABASE_URL for `database` on this server."""
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (the server must be running); returns its URL."""
        name = name or f"genq_test_{secrets.token_hex(4)}"
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def destroy(self) -> None:
        """Stop the server (if it runs) and remove its files."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private server, destroyed after the test (skipped where PostgreSQL's programs are missing)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server programs (initdb, pg_ctl) are not installed")
    server = PrivatePostgres(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
