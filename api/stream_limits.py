"""Caps on open event streams: all of an API process's, and each client's (GENQ_EVENTS_MAX_STREAMS[_PER_CLIENT]);
a client is its API key when there is one, else its peer address.

A stream takes a slot before it starts and gives it back when it ends, however it ends (the job finished,
its time limit, the client went away: the server notices at the next write, a keep-alive at the latest).
Beyond a cap the request is answered 429 `too_many_streams` with `Retry-After`.
"""
from __future__ import annotations

import threading

from flask import Request

RETRY_AFTER_S = 5  # a slot frees when some stream ends; there is no knowing when, so a short, fixed hint


def client_key(request: Request, key: str | None) -> str:
    """Whose streams a request's counts against: its API key's id `key` (however many addresses it calls from),
    or with auth off (None) its peer address."""
    if key is not None:
        return f"key:{key}"
    return request.remote_addr or "unknown"


class TooManyStreams(Exception):
    """A cap is reached; the message says which."""


class StreamSlot:
    """One open stream's place under the caps; `release` gives it back (idempotent)."""

    def __init__(self, limits: StreamLimits, client: str):
        self._limits = limits
        self.client = client
        self._released = False

    def release(self) -> None:
        with self._limits._lock:
            if self._released:
                return
            self._released = True
            self._limits._release(self.client)


class StreamLimits:
    """Counts open streams, all together and per client (thread-safe)."""

    def __init__(self, max_streams: int, max_per_client: int):
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self._lock = threading.Lock()
        self._total = 0
        self._per_client: dict[str, int] = {}

    def acquire(self, client: str) -> StreamSlot:
        """A slot for one more stream of `client`; raises TooManyStreams beyond a cap."""
        with self._lock:
            if self._total >= self.max_streams:
                raise TooManyStreams(f"this server has {self._total} open event streams, its limit; "
                                     f"retry later, or read the job with GET /v1/jobs/{{id}}")
            held = self._per_client.get(client, 0)
            if held >= self.max_per_client:
                raise TooManyStreams(f"this client has {held} open event streams, the limit per client; "
                                     f"close one first")
            self._total += 1
            self._per_client[client] = held + 1
        return StreamSlot(self, client)

    def open_streams(self, client: str | None = None) -> int:
        """Streams open now: all, or `client`'s."""
        with self._lock:
            return self._total if client is None else self._per_client.get(client, 0)

    def _release(self, client: str) -> None:  # under _lock
        self._total -= 1
        left = self._per_client.get(client, 0) - 1
        if left > 0:
            self._per_client[client] = left
        else:
            self._per_client.pop(client, None)
