"""GET /v1/jobs/{id}/events over real HTTP: Server-Sent Events of status changes and text, resumable by
Last-Event-ID, closed at the final status. The worker's side is played here by the job store and a DeltaSink."""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest
import requests
from e2e_helpers import ApiThread, read_sse

from api import create_app
from genq.config import Settings
from genq.delta_sink import DeltaSink
from genq.jobs import JobStore


@pytest.fixture
def api(database_url: str, filesystem_broker_url: str) -> Iterator[tuple[str, Any]]:
    settings = Settings.from_env({
        "DATABASE_URL": database_url, "GENQ_BROKER_URL": filesystem_broker_url,
        "GENQ_EVENTS_POLL_MS": "20", "GENQ_EVENTS_KEEPALIVE": "1",
    })
    app = create_app(settings)
    server = ApiThread(app)
    yield server.url, app.extensions["genq"]
    server.stop()


def _stream(url: str, job_id: str, last_event_id: str | None = None) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    with requests.get(f"{url}/v1/jobs/{job_id}/events", headers=headers, stream=True, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [f for f in read_sse(response) if "event" in f]


def _create(svc: Any) -> str:
    return svc.store.create(model=svc.settings.default_model, input={"prompt": "hi"}, params={}).id


def _play_worker(store: JobStore, sink: DeltaSink, job_id: str, pieces: list[str], gap_s: float) -> None:
    store.claim(job_id, "w")
    for piece in pieces:
        sink.add(job_id, piece)
        time.sleep(gap_s)
    sink.flush()
    store.succeed(job_id, text="".join(pieces), finish_reason="eos", prompt_tokens=1, completion_tokens=len(pieces))


def test_a_finished_job_replays_its_events_then_closes_with_done(api: tuple[str, Any]) -> None:
    url, svc = api
    job_id = _create(svc)
    sink = DeltaSink(svc.sessions)
    _play_worker(svc.store, sink, job_id, ["Par", "is"], 0)
    events = _stream(url, job_id)
    assert [e["event"] for e in events] == ["status", "status", "delta", "status", "done"]
    assert [e["data"].get("status") for e in events if e["event"] == "status"] == ["queued", "running", "succeeded"]
    assert events[2]["data"]["text"] == "Paris"
    assert [int(e["id"]) for e in events] == [1, 2, 3, 4, 4]
    assert events[-1]["data"]["id"] == job_id and events[-1]["data"]["output"]["text"] == "Paris"


def test_text_streams_while_it_is_generated(api: tuple[str, Any]) -> None:
    url, svc = api
    job_id = _create(svc)
    sink = DeltaSink(svc.sessions, interval=0.05)
    pieces = [f"w{i} " for i in range(30)]
    worker = threading.Thread(target=_play_worker, args=(svc.store, sink, job_id, pieces, 0.02))
    arrivals: list[tuple[float, dict[str, Any]]] = []
    with requests.get(f"{url}/v1/jobs/{job_id}/events", stream=True, timeout=20) as response:
        worker.start()
        for frame in read_sse(response):
            if "event" in frame:
                arrivals.append((time.monotonic(), frame))
    worker.join()
    sink.stop()
    kinds = [f["event"] for _, f in arrivals]
    assert kinds[:2] == ["status", "status"] and kinds[-2:] == ["status", "done"]
    deltas = [(t, f) for t, f in arrivals if f["event"] == "delta"]
    assert "".join(f["data"]["text"] for _, f in deltas) == "".join(pieces)
    assert len(deltas) >= 3  # several pieces, as they came: not the whole text at the end
    assert deltas[0][0] < arrivals[-1][0] - 0.2  # the first text arrived well before the job finished


def test_reconnecting_with_last_event_id_resumes_without_gap_or_repeat(api: tuple[str, Any]) -> None:
    url, svc = api
    job_id = _create(svc)
    sink = DeltaSink(svc.sessions, interval=0.02)
    pieces = [f"p{i}" for i in range(20)]
    worker = threading.Thread(target=_play_worker, args=(svc.store, sink, job_id, pieces, 0.02))
    worker.start()
    seen: list[dict[str, Any]] = []
    last_id: str | None = None
    for _ in range(50):  # read a few events, drop the connection, reconnect from the last id
        with requests.get(f"{url}/v1/jobs/{job_id}/events", stream=True, timeout=20,
                          headers={"Last-Event-ID": last_id} if last_id else {}) as response:
            for frame in read_sse(response):
                if "event" in frame:
                    seen.append(frame)
                    last_id = frame["id"]
                    if frame["event"] == "done" or len(seen) % 3 == 0:
                        break
        if seen and seen[-1]["event"] == "done":
            break
    worker.join()
    sink.stop()
    ids = [int(f["id"]) for f in seen if f["event"] != "done"]
    assert ids == list(range(1, len(ids) + 1))
    assert "".join(f["data"]["text"] for f in seen if f["event"] == "delta") == "".join(pieces)
    assert seen[-1]["event"] == "done"


def test_last_event_id_past_the_end_of_a_finished_job_gets_just_done(api: tuple[str, Any]) -> None:
    url, svc = api
    job_id = _create(svc)
    svc.store.cancel(job_id)
    assert [e["event"] for e in _stream(url, job_id, "2")] == ["done"]
    assert [e["event"] for e in _stream(url, job_id, "1")] == ["status", "done"]


def test_an_idle_stream_sends_keep_alive_comments(api: tuple[str, Any]) -> None:
    url, svc = api
    job_id = _create(svc)
    comments = 0
    with requests.get(f"{url}/v1/jobs/{job_id}/events", stream=True, timeout=20) as response:
        started = time.monotonic()
        for frame in read_sse(response):
            if "comment" in frame:
                comments += 1
                if comments == 2:
                    break
            assert time.monotonic() - started < 10
    assert comments == 2
    svc.store.cancel(job_id)


def test_events_of_an_unknown_job_are_404_in_the_error_shape(api: tuple[str, Any]) -> None:
    url, _ = api
    response = requests.get(f"{url}/v1/jobs/6d0f4cbe-7a37-4a4c-9d55-0d8f1d9d4f1a/events", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "9" * 40])
def test_a_malformed_last_event_id_is_400(api: tuple[str, Any], value: str) -> None:
    url, svc = api
    job_id = _create(svc)
    response = requests.get(f"{url}/v1/jobs/{job_id}/events", headers={"Last-Event-ID": value}, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_last_event_id"
    svc.store.cancel(job_id)
