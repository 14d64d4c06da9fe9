"""The client's exceptions: the API's one error shape, or no answer at all."""
from __future__ import annotations

from typing import Any


class GenqClientError(Exception):
    """Anything the client could not do."""


class ConnectionFailed(GenqClientError):
    """The service did not answer (refused, timed out, not HTTP)."""


class ApiError(GenqClientError):
    """An error answer of the API: `{"error": {"code", "message", "field"?}}` with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}" + (f" (field: {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, status: int, body: Any, text: str, retry_after: str | None) -> ApiError:
        """The error of an answer; one that is not in the error shape (a proxy's page) keeps its text."""
        error = body.get("error") if isinstance(body, dict) else None
        wait = _seconds(retry_after)
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            field = error.get("field")
            return cls(status, error["code"], str(error.get("message", "")),
                       field if isinstance(field, str) else None, wait)
        return cls(status, f"http_{status}", text.strip()[:200] or "no body", None, wait)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
