"""The one error shape: `{"error": {"code", "message", "field"?}}`, for every error the API returns.

A dependency that is down is a 503 with `Retry-After`, never a 500: the database unreachable
(`database_unavailable`), its schema missing or behind the code (`database_not_migrated`). The broker refusing a
job is no error: the job is recorded, and published once the broker answers (genq/relay.py).
"""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from genq.store.db_errors import NOT_MIGRATED_HINT, is_unavailable, is_unmigrated
from genq.store.db_retry import describe

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # what a 503 tells the client to wait before trying again
DATABASE_UNAVAILABLE = "database_unavailable"
DATABASE_NOT_MIGRATED = "database_not_migrated"

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

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}  # sent with the error (WWW-Authenticate, Retry-After, RateLimit, ...)


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    """The error body every failing response carries, with `status`."""
    body: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = jsonify({"error": body})
    response.status_code = status
    return response


def unavailable_response(code: str, message: str) -> Response:
    """A 503 in the error shape, with `Retry-After`: a dependency is down, the same request may work later."""
    response = error_response(503, code, message)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def database_error_response(e: SQLAlchemyError) -> Response | None:
    """The 503 for a database that is down or not migrated; None for any other database error (a bug)."""
    if is_unmigrated(e):
        log.error("the database is not migrated: %s", describe(e))
        return unavailable_response(DATABASE_NOT_MIGRATED, f"the database has no genq schema or an old one: "
                                                           f"{NOT_MIGRATED_HINT}")
    if is_unavailable(e):
        log.warning("the database is unavailable: %s", describe(e))
        return unavailable_response(DATABASE_UNAVAILABLE, "the database is unavailable; try again shortly")
    return None


def http_error_response(e: HTTPException) -> Response:
    """An HTTP error raised by Flask or werkzeug (404 no route, 405, 413, ...) in the one shape."""
    status = e.code or 500
    response = error_response(status, http_error_code(status), e.description or e.name)
    if status == 405 and e.get_response().headers.get("Allow"):
        response.headers["Allow"] = e.get_response().headers["Allow"]
    return response


def register_error_handlers(app: Flask) -> None:
    """Render ApiError, werkzeug's HTTP errors and anything unexpected in the one shape."""

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError) -> Response:
        response = error_response(e.status, e.code, e.message, e.field)
        response.headers.update(e.headers)
        return response

    app.register_error_handler(HTTPException, http_error_response)

    @app.errorhandler(SQLAlchemyError)
    def _database_error(e: SQLAlchemyError) -> Response:
        response = database_error_response(e)
        return response if response is not None else _unexpected(e)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        # bad input is caught by parsing before it gets here; this is a bug or an outage, so log it in full
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
