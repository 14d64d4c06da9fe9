"""A Redis server of a test's own, on a free port, that the test may stop, restart and flush.

The shared server at 127.0.0.1:6379 serves every agent's tests and must never be restarted or flushed; a fault
test starts one of these instead: `redis-server --port <free> --save ''` (no snapshot, so a restart comes back
empty, like a flush), bound to 127.0.0.1.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


class PrivateRedis:
    """`start()`, `stop()` (the server's process ends: every connection is cut), `restart()`, `flush()`."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="genq-test-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while self._cli("PING") != "PONG":
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Stop and start again: with `--save ''` it comes back empty (every queued message gone)."""
        self.stop()
        self.start()

    def flush(self) -> None:
        """FLUSHALL: every queued and unacknowledged message gone, the server up throughout."""
        if self._cli("FLUSHALL") != "OK":
            raise RuntimeError("FLUSHALL failed")

    def _cli(self, *command: str) -> str:
        done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *command],
                              capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
