"""werkzeug's threaded HTTP server, answering the errors it raises itself (a request line past 65,536 bytes,
a header line past that or more than 100 of them, a malformed request line) in the API's one error shape
instead of HTML. The app's own, lower limits (api/http_limits.py) answer first for everything below those."""
from __future__ import annotations

import json
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from api.errors import http_error_code


class JsonErrorRequestHandler(WSGIRequestHandler):
    """http.server's `send_error` with a JSON body `{"error": {"code", "message"}}`."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        short = self.responses.get(code, ("error", ""))[0]
        message = message or short
        self.log_error("code %d, message %s", code, message)
        error = {"code": http_error_code(code), "message": message}
        body = json.dumps({"error": error}, separators=(",", ":")).encode()
        self.send_response(code, short)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)


def make_api_server(host: str, port: int, app: Any) -> BaseWSGIServer:
    """A threaded server for `app` on host:port (port 0: a free one)."""
    return make_server(host, port, app, threaded=True, request_handler=JsonErrorRequestHandler)
