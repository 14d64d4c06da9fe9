"""A Python client for genq's own HTTP API (`/v1`): submit, wait, stream, cancel, list, batches.

It speaks HTTP only (through `requests`) and imports nothing of the service, so it runs anywhere a user's
code does. `GenqClient.from_env()` reads `GENQ_URL` (default http://127.0.0.1:8000) and `GENQ_API_KEY`
(sent as `Authorization: Bearer`). Every error answer of the API raises `ApiError` with its code and field.
"""
from genq.client.client import GenqClient
from genq.client.errors import ApiError, ConnectionFailed, GenqClientError
from genq.client.sse import Event

__all__ = ["ApiError", "ConnectionFailed", "Event", "GenqClient", "GenqClientError"]
