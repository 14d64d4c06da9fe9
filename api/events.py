"""GET /v1/jobs/{id}/events: the job's event log as Server-Sent Events, live until the job is final.

    id: 3
    event: status            {"status": "running", "at": ...}
    event: delta             {"text": "Par", "at": ...}   (text as generated, a few tokens per event)
    event: done              the final job object; the stream then ends

`id` is the event's per-job sequence number (`done` repeats the last one). A client reconnecting with
`Last-Event-ID: n` gets the events after n: no gap, no repeat. The stream polls the log every
GENQ_EVENTS_POLL_MS, holding no database connection while it waits, and writes a comment line every
GENQ_EVENTS_KEEPALIVE seconds of silence so proxies keep the connection open. While the database is
unavailable the stream stays open, silent but for the keep-alives, and resumes where it was when it is back.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

from flask import Blueprint, Response, request
from sqlalchemy.orm import Session, sessionmaker

from api.errors import ApiError
from api.services import services
from genq.db_errors import is_unavailable
from genq.job_events import event_data, is_final_status, read_events
from genq.schema import Job
from genq.serialize import job_to_dict

bp = Blueprint("events", __name__, url_prefix="/v1/jobs")

PAGE = 500  # events read per poll
RECONNECT_MS = 1000  # the `retry:` hint: how soon a client's EventSource reconnects
OUTAGE_POLL_S = 1.0  # how often a stream tries the database again while it is unavailable


@bp.get("/<job_id>/events")
def job_events(job_id: str) -> Response:
    svc = services()
    if svc.store.get(job_id) is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    after = _last_event_id()
    stream = _stream(svc.sessions, job_id, after, svc.settings.events_poll_ms / 1000, svc.settings.events_keepalive)
    return Response(
        stream,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},  # no proxy buffering of the stream
    )


def _stream(
    sessions: sessionmaker[Session], job_id: str, after: int, poll_s: float, keepalive_s: float
) -> Iterator[str]:
    last = after
    yield f"retry: {RECONNECT_MS}\n\n"
    quiet_since = time.monotonic()
    while True:
        down = False
        try:
            with sessions() as session:  # closed before any sleep: an idle stream holds no connection
                events = read_events(session, job_id, last, PAGE)
                final = next((e for e in events if e.kind == "status" and is_final_status(e.data["status"])), None)
                job = session.get(Job, job_id) if final is not None or not events else None
        except Exception as e:
            if not is_unavailable(e):
                raise
            events, final, job, down = [], None, None, True  # an outage: wait it out as silence
        else:
            if not events and job is None:  # deleted while streaming
                return
        for event in events:
            yield _frame(event.seq, event.kind, event_data(event))
            last = event.seq
            if event is final:
                if job is not None:
                    yield _frame(last, "done", job_to_dict(job))
                return
        if events:
            quiet_since = time.monotonic()
            continue  # there may be more right away
        if job is not None and is_final_status(job.status) and job.event_seq <= last:  # e.g. from before the log
            yield _frame(last, "done", job_to_dict(job))
            return
        if time.monotonic() - quiet_since >= keepalive_s:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        time.sleep(max(poll_s, OUTAGE_POLL_S) if down else poll_s)


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
