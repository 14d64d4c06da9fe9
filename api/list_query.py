"""`GET /v1/jobs` query parameters to a genq.store.listing.JobFilter; every bad value is a 422 naming the parameter.

    status=queued,running   (or status=queued&status=running: any of them)
    model=<name>
    created_after=<ISO 8601>, created_before=<ISO 8601>   (exclusive; a time without a zone is UTC)
    metadata[<key>]=<value>  (the job's metadata has that key with that string value; several: all of them)
    limit=1..100 (default 20), cursor=<next_cursor of the previous page>
"""
from __future__ import annotations

import re
from datetime import UTC, datetime

from werkzeug.datastructures import MultiDict

from api.errors import ApiError
from api.parsing import check_storable_text
from genq.status import JobStatus
from genq.store.listing import JobFilter
from models.echo import short

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
MAX_METADATA_FILTERS = 8
_PARAMS = ("status", "model", "created_after", "created_before", "limit", "cursor")
_METADATA_PARAM = re.compile(r"^metadata\[(.*)\]$")
METADATA_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"  # the keys `metadata[<key>]` may filter by
_METADATA_KEY = re.compile(METADATA_KEY_PATTERN)
_STATUSES = tuple(s.value for s in JobStatus)


def parse_list_query(args: MultiDict[str, str]) -> tuple[JobFilter, int, str | None]:
    """The filter, page size and cursor a listing asks for."""
    metadata: list[tuple[str, str]] = []
    for name in args:
        match = _METADATA_PARAM.match(name)
        if match is not None:
            key = match.group(1)
            if not _METADATA_KEY.match(key):
                raise ApiError(422, "invalid_value", "metadata keys to filter by are 1-64 letters, digits, or . _ : -",
                               name)
            value = _single(args, name)
            check_storable_text(value, name)  # compared with stored JSON: PostgreSQL refuses NUL in it
            metadata.append((key, value))
        elif name not in _PARAMS:
            raise ApiError(422, "unknown_field", f"unknown query parameter {short(name)}; known: "
                           f"{', '.join(_PARAMS)}, metadata[<key>]", name)
    if len(metadata) > MAX_METADATA_FILTERS:
        raise ApiError(422, "invalid_value", f"at most {MAX_METADATA_FILTERS} metadata filters", "metadata")

    statuses = tuple(dict.fromkeys(s.strip() for v in args.getlist("status") for s in v.split(",") if s.strip()))
    for status in statuses:
        if status not in _STATUSES:
            raise ApiError(422, "invalid_value", f"unknown status {short(status)}; one of {', '.join(_STATUSES)}",
                           "status")
    if "status" in args and not statuses:
        raise ApiError(422, "invalid_value", "give at least one status", "status")

    model = _single(args, "model") if "model" in args else None
    if model is not None and (not 0 < len(model) <= 64 or "\x00" in model):
        raise ApiError(422, "invalid_value", "must be a model name", "model")

    where = JobFilter(
        statuses=statuses,
        model=model,
        created_after=_time(args, "created_after"),
        created_before=_time(args, "created_before"),
        metadata=tuple(metadata),
    )
    limit = DEFAULT_LIMIT
    if "limit" in args:
        raw = _single(args, "limit")
        # ASCII digits only, and few of them (int() of thousands of digits raises)
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(422, "invalid_value", f"must be an integer from 1 to {MAX_LIMIT}", "limit")
        limit = int(raw)
    cursor = _single(args, "cursor") if "cursor" in args else None
    if cursor is not None and not cursor:
        raise ApiError(422, "invalid_value", "must be a next_cursor from a previous page", "cursor")
    return where, limit, cursor


def _single(args: MultiDict[str, str], name: str) -> str:
    values = args.getlist(name)
    if len(values) != 1:
        raise ApiError(422, "invalid_value", "give it once", name)
    return values[0]


def _time(args: MultiDict[str, str], name: str) -> datetime | None:
    if name not in args:
        return None
    raw = _single(args, name)
    try:
        value = datetime.fromisoformat(raw.strip())
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: in UTC it falls outside years 1..9999
        raise ApiError(422, "invalid_value", "must be an ISO 8601 date-time, e.g. 2025-01-31T12:00:00Z", name) from None
