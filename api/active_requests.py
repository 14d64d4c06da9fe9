"""At most N requests of one API process run at once; the others wait for a turn, holding their thread but not
the interpreter.

An API process has many threads (one per request in progress and one per open event stream: gunicorn's
gthread, api/gunicorn_conf.py), and under load dozens of them are runnable together. They then take turns on
one interpreter lock: each turn is a handoff between threads (futex calls), and a request's few database round
trips each wait behind every other thread's turn. Measured on 2 cores (`tests/load/api_load.py`, 800 polls/s):
p99 47 ms with 4 threads, 287 ms with 32. This gate keeps the threads (streams need them) and lets only
`limit` requests run Python at a time, so each one runs through with few handoffs.

A request holds its turn while the app computes its response; a streamed body (an event stream) is sent after
the turn ends, and code that waits within a request (`Prefer: wait`, a synchronous OpenAI completion) gives its
turn up for the wait (`waiting()`), so slow clients and long polls never hold the gate.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_held = threading.local()  # .gate: the gate this thread holds a turn of, if any


class ActiveRequests:
    """WSGI middleware: `app` runs for at most `limit` requests at once."""

    def __init__(self, app: WSGIApp, limit: int):
        self._app = app
        self._turns = threading.Semaphore(limit)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self._turns.acquire()
        _held.gate = self
        try:
            return self._app(environ, start_response)
        finally:
            if getattr(_held, "gate", None) is self:
                _held.gate = None
                self._turns.release()

    def _give_up(self) -> None:
        _held.gate = None
        self._turns.release()

    def _take_back(self) -> None:
        self._turns.acquire()
        _held.gate = self


@contextmanager
def waiting() -> Iterator[None]:
    """Wait (sleep, block on an event) without holding a turn: the thread's turn, if it has one, is given up
    and taken back after."""
    gate: ActiveRequests | None = getattr(_held, "gate", None)
    if gate is None:
        yield
        return
    gate._give_up()
    try:
        yield
    finally:
        gate._take_back()
