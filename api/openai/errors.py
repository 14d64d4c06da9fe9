"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, for everything under /openai/v1.

The status codes are the ones the `openai` client maps to its exception classes: 400 BadRequestError (every
invalid request, including genq's 413/415/422), 401 AuthenticationError, 403 PermissionDeniedError, 404
NotFoundError, 409 ConflictError, 429 RateLimitError, 5xx InternalServerError. genq's own error codes are kept
as `code`. A failure that retrying cannot fix says so with `x-should-retry: false` (the client obeys it).
"""
from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from api.errors import RETRY_AFTER_S, ApiError, database_error_response, http_error_code, http_error_response

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 409: "invalid_request_error", 429: "rate_limit_error"}
_KEPT = (401, 403, 404, 409, 429)  # every other 4xx is a BadRequestError (400) for the client


class OpenAIError(Exception):
    """Raised by the OpenAI-compatible views; rendered by openai_error_response."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 retry: bool | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.retry = status, message, code, param, retry
        self.headers = headers or {}  # sent with the error (WWW-Authenticate, Retry-After, RateLimit, ...)


def from_api_error(e: ApiError, param: str | None = None) -> OpenAIError:
    """genq's error as OpenAI's: the status the client expects, genq's code, the field as OpenAI names it."""
    status = e.status if e.status in _KEPT or e.status >= 500 else 400
    return OpenAIError(status, e.message, e.code, param if param is not None else e.field, headers=e.headers)


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, object]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error_response(e: OpenAIError) -> Response:
    response = jsonify(error_body(e.status, e.message, e.code, e.param))
    response.status_code = e.status
    if e.retry is not None:
        response.headers["x-should-retry"] = "true" if e.retry else "false"
    if e.status in (429, 503):
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    response.headers.update(e.headers)
    return response


def http_openai_response(e: HTTPException) -> Response:
    status = e.code or 500
    response = openai_error_response(OpenAIError(status if status in _KEPT or status >= 500 else 400,
                                                 e.description or e.name, http_error_code(status)))
    if status == 405 and e.get_response().headers.get("Allow"):
        response.headers["Allow"] = e.get_response().headers["Allow"]
    return response


def register_app(app: Flask, prefix: str) -> None:
    """Errors raised before a view is chosen (no route: 404, 405) in OpenAI's shape for paths under `prefix`,
    in genq's elsewhere (a blueprint's handlers see only what its views raise)."""

    def _http(e: HTTPException) -> Response:
        return http_openai_response(e) if request.path.startswith(prefix + "/") else http_error_response(e)

    app.register_error_handler(HTTPException, _http)


def register(bp: Blueprint) -> None:
    """Render every error raised in `bp`'s views (and its nested blueprints') in OpenAI's shape."""

    @bp.errorhandler(OpenAIError)
    def _openai(e: OpenAIError) -> Response:
        return openai_error_response(e)

    @bp.errorhandler(ApiError)
    def _api(e: ApiError) -> Response:
        return openai_error_response(from_api_error(e))

    bp.register_error_handler(HTTPException, http_openai_response)

    @bp.errorhandler(SQLAlchemyError)
    def _database(e: SQLAlchemyError) -> Response:
        genq = database_error_response(e)
        if genq is None:
            return _unexpected(e)
        body = genq.get_json()["error"]
        return openai_error_response(OpenAIError(503, body["message"], body["code"]))

    @bp.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        log.exception("unhandled error")
        return openai_error_response(OpenAIError(500, "internal server error", "internal_error"))
