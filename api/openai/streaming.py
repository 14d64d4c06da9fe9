"""`stream: true`: the job's event log (api/event_hub.py) as OpenAI's chunk stream, ending with `data: [DONE]`.

Each `delta` event becomes a chunk; the last chunk carries the finish reason (and, when logprobs were asked,
every token's logprobs: genq records them with the result, not per delta); with
`stream_options.include_usage` a final chunk with no choices carries the usage. A job whose worker was lost
starts its text again on another (`restart`): what this stream already sent is not sent twice, since the new
attempt regenerates the same text (greedy or seeded decoding, batch-invariant by construction). A failed job
ends the stream with an `error` object, which the client raises. A comment line is written every
KEEPALIVE_S of silence, and the connection is checked as often: a client that went away cancels its job.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from api.event_hub import EventHub
from api.openai.errors import error_body
from api.openai.objects import chunk, finish_reason, is_chat, usage_chunk
from api.openai.waiting import CHECK_S, client_gone, job_error
from genq.status import JobStatus
from genq.store.job_events import is_restart
from genq.store.jobs import JobStore
from genq.store.leases import request_cancel
from genq.store.schema import Job

KEEPALIVE_S = 5.0
DONE = "data: [DONE]\n\n"


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class ChunkStream:
    """The chunks of one job; iterate it as the response body, call `close` when the response closes."""

    def __init__(self, hub: EventHub, store: JobStore, job: Job, include_usage: bool, environ: Mapping[str, Any]):
        self._hub, self._store, self._job = hub, store, job
        self._include_usage, self._environ = include_usage, environ
        self._sub = hub.subscribe(job.id, job.event_seq)
        self.finished = False

    def __iter__(self) -> Iterator[str]:
        job, usage = self._job, self._include_usage
        if is_chat(job):
            yield sse(chunk(job, role=True, include_usage=usage))
        sent, attempt_text, quiet = "", "", 0.0
        while True:
            delivery = self._sub.wait(CHECK_S)
            for event in delivery.events:
                if is_restart(event):
                    attempt_text = ""
                elif event.kind == "delta":
                    attempt_text += event.data.get("text", "")
                    if len(attempt_text) > len(sent):
                        new, sent = attempt_text[len(sent):], attempt_text
                        yield sse(chunk(job, text=new, include_usage=usage))
            if delivery.ended:
                self.finished = True
                yield from self._end(delivery.job, sent)
                return
            if delivery.events:
                quiet = 0.0
                continue
            if client_gone(self._environ):
                return  # close() cancels the job
            quiet += CHECK_S
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"

    def _end(self, final: Job | None, sent: str) -> Iterator[str]:
        if final is None:
            yield sse(error_body(404, f"the job {self._job.id} was deleted", "job_not_found"))
        elif final.status == JobStatus.SUCCEEDED.value:
            text = final.output_text or ""
            if len(text) > len(sent) and text.startswith(sent):  # text the event log had not shown (none, normally)
                yield sse(chunk(final, text=text[len(sent):], include_usage=self._include_usage))
            yield sse(chunk(final, finish=finish_reason(final), logprobs=final.logprobs,
                            include_usage=self._include_usage))
            if self._include_usage:
                yield sse(usage_chunk(final))
        else:
            e = job_error(final)
            yield sse(error_body(e.status, e.message, e.code))
        yield DONE

    def close(self) -> None:
        """The response is closed: stop following, and cancel the job if its stream did not see it end."""
        self._hub.unsubscribe(self._sub)
        if not self.finished:
            request_cancel(self._store, self._job.id)
