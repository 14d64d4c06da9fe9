"""How `genq api` is served: gunicorn's settings and server hooks (genq/cli/api_server.py runs them).

The model: `GENQ_API_WORKERS` processes (default 2: one per core here; each has its own database pool,
broker connection and event-stream poller), each a `gthread` worker with `GENQ_API_THREADS` threads (default
32). A request in progress holds a thread; so does an open event stream (SSE), for its whole life, which is
why the workers are threaded rather than sync. Idle keep-alive connections wait in the worker's poller,
holding no thread. So each process admits at most its threads in concurrent requests; its streams are capped
below that (`stream_cap`), leaving threads for everything else.
Of the requests in progress, at most `GENQ_API_ACTIVE_REQUESTS` (default 4) run at once
(api/active_requests.py, installed by create_app); the others wait for a turn without contending for the
interpreter lock.

The app checks its own request limits (api/http_limits.py: URL 8,000 bytes, a header 8,000, all 32 KiB);
gunicorn's are set above them so the app answers first, in the one error shape. What gunicorn refuses itself
(a request line past 8,190 bytes, a header line past 8,190, more than 256 of them, a malformed request) it
answers in that shape too (`json_errors`), not in HTML.

Extending: `HOOKS` maps gunicorn server-hook names (`post_fork`, `child_exit`, `when_ready`, ...) to lists of
callables; append to them (e.g. Prometheus multiprocess cleanup in `child_exit`) before the server starts.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gunicorn import util

from api.errors import http_error_code
from genq.settings import Settings

# gunicorn's own limits, above the app's (tests/service/test_gunicorn.py checks they are): 8,190 bytes a request
# line (its maximum) and a header line
LIMIT_REQUEST_LINE = 8190
LIMIT_REQUEST_FIELD_SIZE = 8190
LIMIT_REQUEST_FIELDS = 256  # header lines: enough for MAX_HEADER_BYTES of short headers to reach the app
STREAM_THREAD_RESERVE = 8  # threads of each worker an event stream may never take

# gunicorn checks a hook's arity: how many arguments each takes
_HOOK_ARITY = {"when_ready": 1, "post_fork": 2, "post_worker_init": 1, "worker_exit": 2, "child_exit": 2, "on_exit": 1}
HOOKS: dict[str, list[Callable[..., Any]]] = {name: [] for name in _HOOK_ARITY}


def stream_cap(settings: Settings) -> int:
    """Open event streams one worker process allows: GENQ_EVENTS_MAX_STREAMS, but never so many that no
    thread is left for other requests."""
    return max(1, min(settings.events_max_streams, settings.api_threads - STREAM_THREAD_RESERVE))


def options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """gunicorn's settings for the API on host:port."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    opts: dict[str, Any] = {
        "bind": [bind],
        "workers": settings.api_workers,
        "worker_class": "gthread",
        "threads": settings.api_threads,
        "keepalive": 5,  # seconds an idle connection stays open (load balancers keep theirs shorter)
        "timeout": 60,  # a worker that stops answering its arbiter this long is restarted (streams do not count)
        "graceful_timeout": 15,
        "limit_request_line": LIMIT_REQUEST_LINE,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "limit_request_fields": LIMIT_REQUEST_FIELDS,
        "accesslog": None,  # requests are not logged one by one (and an Authorization header never is)
        "errorlog": "-",
        "proc_name": "genq-api",
    }
    for name, hooks in HOOKS.items():
        opts[name] = _run_all(hooks, _HOOK_ARITY[name])
    return opts


def _run_all(hooks: list[Callable[..., Any]], arity: int) -> Callable[..., None]:
    def run(*args: Any) -> None:
        for hook in list(hooks):
            hook(*args)

    def one(a: Any) -> None:
        run(a)

    def two(a: Any, b: Any) -> None:
        run(a, b)

    return one if arity == 1 else two


def _write_json_error(sock: Any, status: int, reason: str, message: str) -> None:
    """gunicorn's `util.write_error` (its answer to a request it refuses before the app), in the error shape."""
    body = json.dumps({"error": {"code": http_error_code(status), "message": f"{reason}: {message}"}},
                      separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


def json_errors() -> None:
    """Make gunicorn answer what it refuses itself in the API's error shape (its workers call
    util.write_error; there is no setting for it)."""
    util.write_error = _write_json_error
