"""The OpenAI chunk stream of a job's events (api/openai/streaming.py), on scripted event hub deliveries: a
takeover's restarted text is not sent twice, and a failed job ends the stream with an error object."""
from __future__ import annotations

import json
from typing import Any

from api.event_hub import Delivery
from api.openai.streaming import ChunkStream
from genq.store.schema import Job, JobEvent, utcnow

JOB_ID = "0c8d1f10-9b0e-4a57-9d4c-1f7b5e0f2f4b"


class ScriptedSubscription:
    def __init__(self, deliveries: list[Delivery]):
        self._deliveries = deliveries

    def wait(self, timeout: float) -> Delivery:
        return self._deliveries.pop(0)


class ScriptedHub:
    def __init__(self, deliveries: list[Delivery]):
        self.sub = ScriptedSubscription(deliveries)
        self.unsubscribed = False

    def subscribe(self, job_id: str, after: int) -> ScriptedSubscription:
        return self.sub

    def unsubscribe(self, sub: object) -> None:
        self.unsubscribed = True


def _job(**fields: Any) -> Job:
    return Job(id=JOB_ID, model="m", input={"messages": [{"role": "user", "content": "Hi"}]}, created_at=utcnow(),
               event_seq=1, **fields)


def _delta(seq: int, text: str) -> JobEvent:
    return JobEvent(job_id=JOB_ID, seq=seq, kind="delta", data={"text": text})


def _running(seq: int, attempt: int) -> JobEvent:
    return JobEvent(job_id=JOB_ID, seq=seq, kind="status", data={"status": "running", "attempt": attempt})


def _chunks(stream: ChunkStream) -> list[Any]:
    frames = [frame.removeprefix("data: ").strip() for frame in stream if frame.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


def test_a_takeover_s_regenerated_text_is_not_sent_twice() -> None:
    final = _job(status="succeeded", output_text="Hello world", finish_reason="eos", prompt_tokens=3,
                 completion_tokens=2)
    hub = ScriptedHub([
        Delivery([_running(2, 1), _delta(3, "Hello"), _delta(4, " wo")]),
        Delivery([_running(5, 2), _delta(6, "Hel")]),  # another worker starts over
        Delivery([_delta(7, "lo world")], ended=True, job=final),
    ])
    stream = ChunkStream(hub, store=None, job=_job(status="queued"), include_usage=True, environ={})  # type: ignore[arg-type]
    chunks = _chunks(stream)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello world"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5
    stream.close()  # finished: nothing to cancel (store=None would fail if it tried)
    assert hub.unsubscribed


def test_a_failed_job_ends_the_stream_with_an_error_object() -> None:
    final = _job(status="failed", error_code="attempts_exhausted", error_message="lost three times")
    hub = ScriptedHub([Delivery([_delta(2, "Hi")], ended=True, job=final)])
    chunks = _chunks(ChunkStream(hub, store=None, job=_job(status="queued"), include_usage=False, environ={}))  # type: ignore[arg-type]
    assert chunks[-1] == {"error": {"message": "lost three times", "type": "server_error", "param": None,
                                    "code": "attempts_exhausted"}}
