"""Limits on a request's URL and headers, checked by the app so that they hold, in the one error shape, whatever
server runs it. A server's own limits must lie above these (werkzeug's: 65,536 bytes a line, 100 header lines;
for gunicorn: `limit_request_line` 8190, `limit_request_field_size` and `limit_request_fields` at least these),
so that the app, not the server, answers first."""
from __future__ import annotations

from flask import request

from api.errors import ApiError

MAX_URL_BYTES = 8000  # the request target: path and query string, as sent
MAX_HEADER_FIELD_BYTES = 8000  # one header: name, ": " and value
MAX_HEADER_BYTES = 32 << 10  # all headers together


def check_request_limits() -> None:
    """A `before_request` hook: 414 `uri_too_long` past MAX_URL_BYTES; 431 `headers_too_large` past
    MAX_HEADER_FIELD_BYTES (naming the header) or MAX_HEADER_BYTES."""
    environ = request.environ
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")  # gunicorn sets RAW_URI, werkzeug both
    if target is None:
        query = environ.get("QUERY_STRING", "")
        target = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") + ("?" + query if query else "")
    if len(target) > MAX_URL_BYTES:
        raise ApiError(414, "uri_too_long", f"the URL is {len(target)} bytes; at most {MAX_URL_BYTES}")
    total = 0
    for name, value in request.headers.items():  # WSGI strings are latin-1: one character per byte
        size = len(name) + 2 + len(value)
        if size > MAX_HEADER_FIELD_BYTES:
            raise ApiError(431, "headers_too_large", f"the header is {size} bytes; at most {MAX_HEADER_FIELD_BYTES}",
                           name)
        total += size
    if total > MAX_HEADER_BYTES:
        raise ApiError(431, "headers_too_large", f"the headers are {total} bytes together; at most {MAX_HEADER_BYTES}")
