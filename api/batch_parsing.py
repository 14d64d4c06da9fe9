"""A batch file (JSONL, one POST /v1/jobs body plus `custom_id` per line) to validated jobs, or the first error.

A line may also be an OpenAI Batch API request line, `{"custom_id", "method", "url", "body"}`
(api/openai/batch_lines.py), so one file serves genq's batches and OpenAI's.

Every line is checked before anything is created. An error names its line: the message starts
`line N:` and the field is `line[N]` or `line[N].<field as POST /v1/jobs names it>`.
"""
from __future__ import annotations

from typing import Any

from api.errors import ApiError
from api.json_depth import TooDeep
from api.openai.batch_lines import is_openai_line, parse_openai_line
from api.parsing import check_storable_text, loads, parse_new_job
from genq.catalog import Catalog
from genq.submit import BatchLine
from genq.webhooks import AllowList

CUSTOM_ID_MAX = 255


def parse_batch(
    raw: bytes, catalog: Catalog, *, max_lines: int, max_metadata_bytes: int, webhook_allow: AllowList,
    openai_endpoint: str | None = None,
) -> list[BatchLine]:
    """Validate a whole batch file; raises ApiError (413 past `max_lines` requests, 422 for a bad line).
    `openai_endpoint`: every line must be an OpenAI request line for this URL (OpenAI's Batch API)."""
    numbered = [(n, line) for n, line in enumerate(raw.split(b"\n"), start=1) if line.strip()]
    if not numbered:
        raise ApiError(422, "empty_batch", "the batch has no requests (one JSON object per line)")
    if len(numbered) > max_lines:
        raise ApiError(413, "too_many_lines", f"the batch has {len(numbered)} requests; at most {max_lines}")
    seen: dict[str, int] = {}
    out = []
    for n, line in numbered:
        body = _json_line(n, line)
        custom_id = body.pop("custom_id", None)
        if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= CUSTOM_ID_MAX:
            raise _at(n, ApiError(422, "invalid_value", f"must be a string of 1..{CUSTOM_ID_MAX} characters",
                                  "custom_id"))
        try:
            check_storable_text(custom_id, "custom_id")
        except ApiError as e:
            raise _at(n, e) from None
        if custom_id in seen:
            raise _at(n, ApiError(422, "duplicate_custom_id",
                                  f"custom_id {custom_id!r} is already used on line {seen[custom_id]}", "custom_id"))
        seen[custom_id] = n
        try:
            if openai_endpoint is not None or is_openai_line(body):
                job = parse_openai_line(body, catalog, max_metadata_bytes, webhook_allow, openai_endpoint)
            else:
                job = parse_new_job(body, catalog, max_metadata_bytes, webhook_allow)
        except ApiError as e:
            raise _at(n, e) from None
        out.append(BatchLine(n, custom_id, job))
    return out


def _json_line(n: int, line: bytes) -> dict[str, Any]:
    try:
        body = loads(line.decode("utf-8"))
    except TooDeep as e:
        raise _at(n, ApiError(422, "too_deep", f"the request {e}", e.key)) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise _at(n, ApiError(422, "invalid_json", f"not valid JSON: {e}")) from None
    if not isinstance(body, dict):
        raise _at(n, ApiError(422, "invalid_body", "each line must be a JSON object"))
    return body


def _at(n: int, e: ApiError) -> ApiError:
    field = f"line[{n}]" + (f".{e.field}" if e.field else "")
    return ApiError(e.status, e.code, f"line {n}: {e.message}", field)
