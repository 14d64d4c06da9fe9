"""POST /openai/v1/chat/completions and /openai/v1/completions: every request is a genq job.

The request is translated (api/openai/requests.py) and submitted through genq's one write path
(genq.submit.submit_job): it is queued, batched with everything else, listed in /v1/jobs and retried after a
lost worker like any job. The answer waits for the job (api/openai/waiting.py) or streams it
(api/openai/streaming.py); a client that disconnects first cancels its job.
"""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.errors import ApiError
from api.openai.caller import caller, quota
from api.openai.errors import OpenAIError, from_api_error
from api.openai.objects import completion_object
from api.openai.requests import CHAT, COMPLETION, parse_request
from api.openai.streaming import ChunkStream
from api.openai.waiting import job_error, wait_for_job
from api.parsing import json_body
from api.quota_limits import quota_error
from api.services import services
from api.stream_limits import TooManyStreams, client_key
from genq.status import JobStatus
from genq.store.quotas import QuotaExceeded
from genq.submit import submit_job

bp = Blueprint("openai_completions", __name__)


@bp.post("/chat/completions")
def chat_completions() -> Response:
    return _complete(CHAT)


@bp.post("/completions")
def completions() -> Response:
    return _complete(COMPLETION)


def _complete(endpoint: str) -> Response:
    svc = services()
    try:
        body = json_body(request)
    except ApiError as e:
        raise OpenAIError(400, e.message, e.code) from None
    parsed = parse_request(endpoint, body, svc.catalog, svc.settings.max_metadata_bytes, svc.settings.webhook_allow)
    slot = None
    if parsed.stream:
        try:
            slot = svc.stream_limits.acquire(client_key(request, caller()))
        except TooManyStreams as e:
            raise OpenAIError(429, str(e), "too_many_streams") from None
    try:
        job, _ = submit_job(svc.store, svc.publisher, parsed.job, quota=quota(), relay=svc.relay)
    except QuotaExceeded as e:
        if slot is not None:
            slot.release()
        raise from_api_error(quota_error(e)) from None
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    if slot is not None:  # streaming
        stream = ChunkStream(svc.event_hub, svc.store, job, parsed.include_usage, request.environ)
        response = Response(iter(stream), mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        @response.call_on_close
        def _closed() -> None:
            stream.close()
            slot.release()

        return response
    final = wait_for_job(svc.event_hub, svc.store, job, request.environ)
    if final is None:  # the client is gone (its job canceled): nobody reads this
        raise OpenAIError(409, "the client disconnected; its job was canceled", "job_canceled")
    if final.status != JobStatus.SUCCEEDED.value:
        raise job_error(final)
    return jsonify(completion_object(final))
