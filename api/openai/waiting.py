"""A synchronous OpenAI request waits for its job on the process's event hub (api/event_hub.py), not by polling
the database, and cancels the job when its client goes away.

Whether the client is gone is read from the connection itself: readable with nothing to read means the peer
closed it (werkzeug's and gunicorn's servers put the socket in the WSGI environ). A server that does not, or
a TLS socket that cannot be peeked, is never taken for gone; a stream still finds out at its next write.
"""
from __future__ import annotations

import select
import socket
from collections.abc import Mapping
from typing import Any

from api.active_requests import waiting
from api.event_hub import EventHub
from api.openai.errors import OpenAIError
from genq.status import JobStatus
from genq.store.jobs import JobStore
from genq.store.leases import request_cancel
from genq.store.schema import Job

CHECK_S = 0.5  # how often a waiting request looks at its connection
_SOCKET_KEYS = ("werkzeug.socket", "gunicorn.socket")
# failed jobs whose request itself was at fault (the engine refused it): a 400, not worth a retry
_REQUEST_FAULTS = ("invalid_request", "prompt_too_long")


def client_gone(environ: Mapping[str, Any]) -> bool:
    """Whether the request's client has closed its connection."""
    sock = next((environ[k] for k in _SOCKET_KEYS if environ.get(k) is not None), None)
    if not isinstance(sock, socket.socket):
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (ValueError, NotImplementedError):  # e.g. a TLS socket refuses MSG_PEEK: we cannot tell
        return False
    except OSError:  # reset by the peer
        return True


def wait_for_job(hub: EventHub, store: JobStore, job: Job, environ: Mapping[str, Any]) -> Job | None:
    """The job once it is final; None if the client went away first (the job is then canceled) or the job
    was deleted."""
    if job.status in JobStatus.TERMINAL:
        return job
    sub = hub.subscribe(job.id, job.event_seq)
    try:
        while True:
            with waiting():  # no turn of the gate held while waiting (api/active_requests.py)
                delivery = sub.wait(CHECK_S)
            if delivery.ended:
                return delivery.job
            if client_gone(environ):
                request_cancel(store, job.id)
                return None
    finally:
        hub.unsubscribe(sub)


def job_error(job: Job) -> OpenAIError:
    """Why a finished job that did not succeed has no answer, as the error the request gets."""
    if job.status == JobStatus.CANCELED.value:
        return OpenAIError(409, f"the job {job.id} was canceled", "job_canceled", retry=False)
    if job.status == JobStatus.EXPIRED.value:
        return OpenAIError(503, f"the job {job.id} expired before a worker took it", "job_expired")
    code = job.error_code or "job_failed"
    if code in _REQUEST_FAULTS:
        return OpenAIError(400, job.error_message or code, code, retry=False)
    return OpenAIError(500, job.error_message or f"the job {job.id} failed", code, retry=False)
