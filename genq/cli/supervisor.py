"""`genq up`: migrate, run the API and one worker as child processes, and stop them together.

It says the service is up once the API answers /healthz and the worker has loaded its models (it writes a
ready file, genq/readiness.py); a model that fails to load stops the service with the reason.
Children get the same environment (so the same Settings). The supervisor forwards SIGINT/SIGTERM to them,
and if either child exits on its own it stops the other and exits with that child's status: a service that
is half up is reported, not hidden.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from types import FrameType

from genq.readiness import read_readiness
from genq.settings import Settings
from genq.store import migrate

STOP_GRACE_S = 15.0
READY_TIMEOUT_S = 120.0


def run_up(host: str | None = None, port: int | None = None) -> int:
    """Run the whole service on this machine until interrupted; returns the exit status."""
    env = dict(os.environ)
    if host is not None:
        env["GENQ_HOST"] = host
    if port is not None:
        env["GENQ_PORT"] = str(port)
    settings = Settings.from_env(env)  # fail here, once, with a clear message, rather than in both children
    migrate.upgrade(settings.database_url)
    print(f"genq: database ready ({_redact(settings.database_url)})", flush=True)

    ready_dir = tempfile.TemporaryDirectory(prefix="genq-up-")
    ready_file = os.path.join(ready_dir.name, "worker-ready.json")
    children = {
        "api": _spawn(["api", "--server", "werkzeug"], env),  # one process is plenty for one machine
        "worker": _spawn(["worker", "--ready-file", ready_file], env),
    }
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = f"http://{_client_host(settings.host)}:{settings.port}"
        api_ready = ready = False
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    if not stopping:
                        print(f"genq: the {name} process exited with status {code}; stopping", file=sys.stderr)
                    _stop_all(children)
                    return 0 if stopping else (code or 1)
            if not ready and not stopping:
                worker = read_readiness(ready_file)
                if worker is not None and worker.error is not None:
                    print(f"genq: the worker could not load a model ({worker.error}); stopping", file=sys.stderr)
                    _stop_all(children)
                    return 1
                if not api_ready:
                    if _healthy(url):
                        api_ready = True
                        if worker is None:
                            print(f"genq: the API answers on {url}; the worker is loading its models", flush=True)
                    elif time.monotonic() > deadline:
                        print(f"genq: the API did not become healthy within {READY_TIMEOUT_S:.0f}s", file=sys.stderr)
                        _stop_all(children)
                        return 1
                if api_ready and worker is not None:
                    ready = True
                    print(f"genq: models loaded: {', '.join(worker.loaded) or 'none'}", flush=True)
                    print(f"genq is up: {url}  (Ctrl-C to stop)", flush=True)
            time.sleep(0.2)
    finally:
        _stop_all(children)
        ready_dir.cleanup()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "genq", *args], env=env)


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children.values():
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _client_host(bind_host: str) -> str:
    return "127.0.0.1" if bind_host in ("0.0.0.0", "") else ("[::1]" if bind_host == "::" else bind_host)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL SQLAlchemy cannot parse is reported by migrate before we get here
        return "?"
