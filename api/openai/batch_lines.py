"""OpenAI's batch request line, `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`,
as a genq job: what lets one JSONL file serve genq's `POST /v1/batches` and OpenAI's Batch API alike.

Errors are genq's ApiError (api/batch_parsing.py names the line), with the field inside the line:
`body.temperature`, `url`, ...
"""
from __future__ import annotations

from typing import Any

from api.errors import ApiError
from api.openai.errors import OpenAIError
from api.openai.requests import CHAT, COMPLETION, parse_request
from genq.catalog import Catalog
from genq.submit import NewJob
from genq.webhooks import AllowList
from models.echo import short

ENDPOINTS = (CHAT, COMPLETION)
_LINE_KEYS = ("method", "url", "body")


def is_openai_line(line: dict[str, Any]) -> bool:
    """Whether a batch line (its custom_id taken out) is in OpenAI's shape rather than a genq job body."""
    return "url" in line and "body" in line


def parse_openai_line(line: dict[str, Any], catalog: Catalog, max_metadata_bytes: int,
                      webhook_allow: AllowList = AllowList(), endpoint: str | None = None) -> NewJob:
    """The job an OpenAI request line asks for; `endpoint`: the one URL every line must name (OpenAI's batch)."""
    for key in line:
        if key not in _LINE_KEYS:
            raise ApiError(422, "unknown_field", f"unknown field {short(key)}; an OpenAI request line has "
                           "custom_id, method, url, body", str(key)[:64])
    if line.get("method", "POST") != "POST":
        raise ApiError(422, "invalid_value", "must be POST", "method")
    url = line.get("url")
    if url not in ENDPOINTS:
        raise ApiError(422, "invalid_value", f"must be one of {', '.join(ENDPOINTS)}", "url")
    if endpoint is not None and url != endpoint:
        raise ApiError(422, "invalid_value", f"must be the batch's endpoint, {endpoint}", "url")
    body = line.get("body")
    try:
        parsed = parse_request(url, body, catalog, max_metadata_bytes, webhook_allow)
    except OpenAIError as e:
        raise ApiError(422 if e.status == 400 else e.status, e.code or "invalid_value", e.message,
                       f"body.{e.param}" if e.param else "body") from None
    if parsed.stream:
        raise ApiError(422, "invalid_value", "a batch request cannot stream", "body.stream")
    return parsed.job
