"""The one error shape: `{"error": {"code", "message", "field"?}}`, for every error the API returns."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# machine-readable codes for the HTTP errors Flask and werkzeug raise themselves
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    431: "headers_too_large",
}


def http_error_code(status: int) -> str:
    """The error code of an HTTP error raised by Flask, werkzeug or the HTTP server itself."""
    return _HTTP_CODES.get(status, f"http_{status}")


class ApiError(Exception):
    """Raised by parsing and views; rendered by error_response."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    """The error body every failing response carries, with `status`."""
    body: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = jsonify({"error": body})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Render ApiError, werkzeug's HTTP errors and anything unexpected in the one shape."""

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError) -> Response:
        return error_response(e.status, e.code, e.message, e.field)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        status = e.code or 500
        response = error_response(status, http_error_code(status), e.description or e.name)
        if status == 405 and e.get_response().headers.get("Allow"):
            response.headers["Allow"] = e.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        # bad input is caught by parsing before it gets here; this is a bug or an outage, so log it in full
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
