"""GET /v1/jobs/{id}/events: the job's event log as Server-Sent Events, live until the job is final.

    id: 3
    event: status            {"status": "running", "attempt": 1, "at": ...}
    event: delta             {"text": "Par", "at": ...}   (text as generated, a few tokens per event)
    event: restart           {"status": "running", "attempt": 2, "at": ...}   (a takeover: the text starts over)
    event: done              the final job object; the stream then ends

`id` is the event's per-job sequence number (`done` repeats the last one). A client reconnecting with
`Last-Event-ID: n` gets the events after n: no gap, no repeat. When a job's worker is lost and another takes
the job over, the new attempt's text starts from nothing: the stream says so with `restart`, and the deltas
after the last `restart` join to the job's output. The process's one poller (api/event_hub.py) reads the
log every GENQ_EVENTS_POLL_MS for all streams; a stream holds no database connection while it waits, and
writes a comment line every GENQ_EVENTS_KEEPALIVE seconds of silence so proxies keep the connection open.
Streams are capped (api/stream_limits.py) and last at most GENQ_EVENTS_MAX_SECONDS; then the stream ends
and the client resumes with Last-Event-ID (EventSource does so by itself). While
the database is unavailable a stream stays open, silent but for the keep-alives, and goes on when it is back.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request

from api.auth import current_key_id
from api.errors import ApiError, error_response
from api.event_hub import Subscription
from api.scoping import owned_job
from api.services import services
from api.stream_limits import RETRY_AFTER_S, TooManyStreams, client_key
from genq.serialize import iso, job_to_dict
from genq.store.job_events import is_restart
from genq.store.schema import JobEvent

bp = Blueprint("events", __name__)  # nested in api.jobs: /v1/jobs/<job_id>/events

RECONNECT_MS = 1000  # the `retry:` hint: how soon a client's EventSource reconnects


@bp.get("/<job_id>/events")
def job_events(job_id: str) -> Response:
    svc = services()
    owned_job(job_id)
    after = _last_event_id()
    try:
        slot = svc.stream_limits.acquire(client_key(request, current_key_id()))
    except TooManyStreams as e:
        response = error_response(429, "too_many_streams", str(e))
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    sub = svc.event_hub.subscribe(job_id, after)
    settings = svc.settings
    response = Response(
        _stream(sub, after, settings.events_keepalive, settings.events_max_seconds),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},  # no proxy buffering of the stream
    )

    @response.call_on_close
    def _closed() -> None:  # however the stream ends, even if it never started
        svc.event_hub.unsubscribe(sub)
        slot.release()

    return response


def _stream(sub: Subscription, after: int, keepalive_s: float, max_s: float) -> Iterator[str]:
    last = after
    yield f"retry: {RECONNECT_MS}\n\n"
    now = time.monotonic()
    deadline, quiet_since = now + max_s, now
    while True:
        now = time.monotonic()
        if now >= deadline:
            yield ": time limit of this stream; reconnect with Last-Event-ID to go on\n\n"
            return
        delivery = sub.wait(min(deadline, quiet_since + keepalive_s) - now)
        for event in delivery.events:
            yield _frame(event.seq, _kind(event), event_data(event))
            last = event.seq
        if delivery.ended:
            if delivery.job is not None:  # else the job was deleted while streaming
                yield _frame(last, "done", job_to_dict(delivery.job))
            return
        if delivery.events:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= keepalive_s:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()


def _kind(event: JobEvent) -> str:
    return "restart" if is_restart(event) else event.kind


def event_data(event: JobEvent) -> dict[str, Any]:
    """What a client is sent for one event (the stored data, plus when it happened)."""
    return {**event.data, "at": iso(event.created_at)}


def _frame(event_id: int, kind: str, data: Any) -> str:
    # json.dumps writes no raw newline, so the data is one `data:` line
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _last_event_id() -> int:
    """Resume point: the `Last-Event-ID` header (EventSource sends it) or `?last_event_id=`; 0 from the start."""
    raw = request.headers.get("Last-Event-ID", request.args.get("last_event_id", "")).strip()
    if not raw:
        return 0
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be an event id (a non-negative integer)",
                       "Last-Event-ID")
    return int(raw)
