"""genq.client against a scripted HTTP server: what it does where a real service rarely shows it (a stream the
service ends before `done`, an error page not in the API's shape)."""
from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from genq.client import ApiError, GenqClient


class _Scripted(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes, as a stream cut short does
    replies: list[tuple[int, str, bytes]] = []
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        status, content_type, body = self.replies.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Scripted.replies, _Scripted.seen = [], []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_a_stream_ended_before_done_is_resumed_after_the_last_event_id(server: str) -> None:
    _Scripted.replies = [
        (200, "text/event-stream", b'retry: 1000\n\nid: 1\nevent: status\ndata: {"status": "running"}\n\n'
                                   b'id: 2\nevent: delta\ndata: {"text": "Par"}\n\n: stream limit\n\n'),
        (200, "text/event-stream", b'id: 3\nevent: delta\ndata: {"text": "is"}\n\n'
                                   b'id: 3\nevent: done\ndata: {"id": "j", "status": "succeeded"}\n\n'),
    ]
    client = GenqClient(server, api_key="gk_1")
    assert "".join(client.stream_text("j")) == "Paris"
    assert [s["path"] for s in _Scripted.seen] == ["/v1/jobs/j/events"] * 2
    assert "last-event-id" not in _Scripted.seen[0] and _Scripted.seen[1]["last-event-id"] == "2"
    assert {s["authorization"] for s in _Scripted.seen} == {"Bearer gk_1"}


def test_an_error_in_the_api_shape_and_one_that_is_not(server: str) -> None:
    _Scripted.replies = [
        (503, "application/json", b'{"error": {"code": "database_unavailable", "message": "down"}}'),
        (502, "text/html", b"<html>Bad Gateway</html>"),
    ]
    client = GenqClient(server)
    with pytest.raises(ApiError) as shaped:
        client.get_job("j")
    assert (shaped.value.status, shaped.value.code, shaped.value.message) == (503, "database_unavailable", "down")
    with pytest.raises(ApiError) as page:
        client.get_job("j")
    assert (page.value.status, page.value.code) == (502, "http_502") and "Bad Gateway" in page.value.message
