"""GET /v1/jobs/{id}/events over real HTTP: Server-Sent Events of status changes and text, resumable by
Last-Event-ID, closed at the final status. The worker's side is played here by the job store and a DeltaSink."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from e2e_helpers import ApiThread, read_sse, wait_until
from sqlalchemy import event

from api import create_app
from genq.settings import Settings
from genq.store.delta_sink import DeltaSink
from genq.store.jobs import JobStore


@pytest.fixture
def make_api(database_url: str, filesystem_broker_url: str) -> Iterator[Callable[..., tuple[str, Any]]]:
    servers: list[ApiThread] = []

    def make(**env: str) -> tuple[str, Any]:
        settings = Settings.from_env({
            "DATABASE_URL": database_url, "GENQ_BROKER_URL": filesystem_broker_url,
            "GENQ_EVENTS_POLL_MS": "20", "GENQ_EVENTS_KEEPALIVE": "1", **env,
        })
        app = create_app(settings)
        servers.append(ApiThread(app))
        return servers[-1].url, app.extensions["genq"]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def api(make_api: Callable[..., tuple[str, Any]]) -> tuple[str, Any]:
    return make_api()


def _stream(url: str, job_id: str, last_event_id: str | None = None) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    with requests.get(f"{url}/v1/jobs/{job_id}/events", headers=headers, stream=True, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [f for f in read_sse(response) if "event" in f]


def _create(svc: Any) -> str:
    return svc.store.create(model=svc.settings.default_model, input={"prompt": "hi"}, params={}).id


def _play_worker(store: JobStore, sink: DeltaSink, job_id: str, pieces: list[str], gap_s: float) -> None:
    claim = store.claim(job_id, "w")
    assert claim is not None
    for piece in pieces:
        sink.add(job_id, claim.attempt, piece)
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


def _joined_after_last_restart(events: list[dict[str, Any]]) -> str:
    restarts = [i for i, e in enumerate(events) if e["event"] == "restart"]
    start = restarts[-1] + 1 if restarts else 0
    return "".join(e["data"]["text"] for e in events[start:] if e["event"] == "delta")


def test_a_takeover_is_marked_and_the_deltas_after_the_last_restart_are_the_output(api: tuple[str, Any]) -> None:
    url, svc = api
    job_id = _create(svc)
    sink = DeltaSink(svc.sessions, interval=3600)  # writes only when flushed
    first = svc.store.claim(job_id, "w1", lease_seconds=-1)  # its worker is lost: the lease is out at once
    sink.add(job_id, first.attempt, "The first attempt's ")
    sink.flush()
    second = svc.store.claim(job_id, "w2")  # another worker takes it over
    assert (first.attempt, second.attempt) == (1, 2)
    sink.add(job_id, first.attempt, "late words of the first")  # its frozen worker wakes: dropped
    sink.add(job_id, second.attempt, "Paris is ")
    sink.flush()
    sink.add(job_id, second.attempt, "the capital.")
    sink.flush()
    svc.store.succeed(job_id, text="Paris is the capital.", finish_reason="eos", prompt_tokens=1,
                      completion_tokens=4, attempt=second.attempt)
    events = _stream(url, job_id)
    assert [e["event"] for e in events] == ["status", "status", "delta", "restart", "delta", "delta", "status",
                                           "done"]
    assert events[1]["data"]["attempt"] == 1 and events[3]["data"]["attempt"] == 2
    assert [int(e["id"]) for e in events] == [1, 2, 3, 4, 5, 6, 7, 7]
    assert _joined_after_last_restart(events) == events[-1]["data"]["output"]["text"] == "Paris is the capital."
    # resuming from before the restart gets it too; from after, the rest of the new attempt's text
    assert [e["event"] for e in _stream(url, job_id, "3")][:2] == ["restart", "delta"]
    assert _joined_after_last_restart(_stream(url, job_id, "4")) == "Paris is the capital."


def _open(url: str, job_id: str) -> requests.Response:
    return requests.get(f"{url}/v1/jobs/{job_id}/events", stream=True, timeout=20)


@pytest.mark.parametrize("env,which", [
    ({"GENQ_EVENTS_MAX_STREAMS_PER_CLIENT": "2"}, "client"),
    ({"GENQ_EVENTS_MAX_STREAMS": "2", "GENQ_EVENTS_MAX_STREAMS_PER_CLIENT": "10"}, "server"),
])
def test_streams_beyond_a_cap_are_429_too_many_streams_until_one_closes(
    make_api: Callable[..., tuple[str, Any]], env: dict[str, str], which: str
) -> None:
    url, svc = make_api(**env)
    job_id = _create(svc)
    streams = [_open(url, job_id) for _ in range(2)]
    assert [r.status_code for r in streams] == [200, 200]
    refused = _open(url, job_id)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "too_many_streams" and which in refused.json()["error"]["message"]
    streams[0].close()  # the server notices at its next write (a keep-alive, every second here)
    reopened = wait_until(lambda: (r := _open(url, job_id)).status_code == 200 and r, 10, "no slot freed")
    for response in [*streams[1:], reopened]:
        response.close()
    wait_until(lambda: svc.stream_limits.open_streams() == 0, 10, "slots still held")
    svc.store.cancel(job_id)


def test_a_stream_ends_at_its_time_limit_and_resuming_loses_nothing(make_api: Callable[..., tuple[str, Any]]) -> None:
    url, svc = make_api(GENQ_EVENTS_MAX_SECONDS="1")
    job_id = _create(svc)
    sink = DeltaSink(svc.sessions, interval=0.02)
    pieces = [f"p{i}" for i in range(40)]
    worker = threading.Thread(target=_play_worker, args=(svc.store, sink, job_id, pieces, 0.05))  # about 2 s
    worker.start()
    seen: list[dict[str, Any]] = []
    connections = 0
    while not seen or seen[-1]["event"] != "done":
        connections += 1
        assert connections < 20
        started = time.monotonic()
        with requests.get(f"{url}/v1/jobs/{job_id}/events", stream=True, timeout=20,
                          headers={"Last-Event-ID": seen[-1]["id"]} if seen else {}) as response:
            frames = list(read_sse(response))
        seen += [f for f in frames if "event" in f]
        if seen[-1]["event"] != "done":  # it ended by its limit, and said so
            assert time.monotonic() - started < 5 and "time limit" in frames[-1].get("comment", "")
    worker.join()
    sink.stop()
    assert connections >= 2
    ids = [int(f["id"]) for f in seen if f["event"] != "done"]
    assert ids == list(range(1, len(ids) + 1))
    assert "".join(f["data"]["text"] for f in seen if f["event"] == "delta") == "".join(pieces)


def test_one_poller_serves_every_stream_holding_no_connection_while_they_wait(api: tuple[str, Any]) -> None:
    url, svc = api
    jobs = [_create(svc), _create(svc)]
    streams = {job_id: [_open(url, job_id) for _ in range(5)] for job_id in jobs}
    time.sleep(0.5)  # all ten are open and waiting
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(svc.db, "before_cursor_execute", count)
    started, held = time.monotonic(), []
    while time.monotonic() - started < 1.0:
        held.append(svc.db.pool.checkedout())
        time.sleep(0.01)
    event.remove(svc.db, "before_cursor_execute", count)
    polls = 1.0 / (svc.settings.events_poll_ms / 1000)  # 50 in that second
    assert statements <= polls + 2  # one query a poll for ten idle streams, not one a stream
    assert max(held) <= 1 and held.count(0) > len(held) / 2  # the poller's, during a poll only
    sink = DeltaSink(svc.sessions, interval=0.02)
    players = [threading.Thread(target=_play_worker, args=(svc.store, sink, j, [f"{j[:4]}-{i} " for i in range(10)],
                                                           0.02)) for j in jobs]
    for player in players:
        player.start()
    for job_id, responses in streams.items():
        got = []
        for response in responses:
            with response:
                got.append([(f["id"], f["event"], f["data"]) for f in read_sse(response) if "event" in f])
        assert all(g == got[0] for g in got)  # every stream of a job saw the same events
        assert [e[1] for e in got[0]][-2:] == ["status", "done"]
        joined = "".join(e[2]["text"] for e in got[0] if e[1] == "delta")
        assert joined == "".join(f"{job_id[:4]}-{i} " for i in range(10))
    for player in players:
        player.join()
    sink.stop()
