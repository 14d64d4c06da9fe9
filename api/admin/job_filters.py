"""The job list's filters: each is one entry of FILTERS, which turns the form's fields into
genq.store.listing.JobFilter arguments. Adding a filter is one more entry here (plus its JobFilter field).
A value the form cannot mean is reported next to its field, never a 500.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.datastructures import MultiDict

from genq.status import JobStatus
from genq.store.listing import JobFilter
from genq.store.schema import utcnow

STATUSES = tuple(s.value for s in JobStatus)
RANGES = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1),
          "7d": timedelta(days=7)}
_META = re.compile(r"^([A-Za-z0-9_.:-]{1,64})=(.{0,256})$")


class FilterError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _statuses(args: MultiDict[str, str]) -> dict[str, Any]:
    chosen = tuple(s for s in args.getlist("status") if s)
    bad = [s for s in chosen if s not in STATUSES]
    if bad:
        raise FilterError("status", f"unknown status; one of {', '.join(STATUSES)}")
    return {"statuses": chosen} if chosen else {}


def _model(args: MultiDict[str, str]) -> dict[str, Any]:
    model = args.get("model", "").strip()
    if len(model) > 64 or "\x00" in model:
        raise FilterError("model", "not a model name")
    return {"model": model} if model else {}


def _time(name: str, key: str) -> Callable[[MultiDict[str, str]], dict[str, Any]]:
    def parse(args: MultiDict[str, str]) -> dict[str, Any]:
        value = args.get(name, "").strip()
        if not value:
            return {}
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise FilterError(name, "a date and time, e.g. 2026-12-01T12:00 (UTC)") from None
        return {key: when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)}
    return parse


def _range(args: MultiDict[str, str]) -> dict[str, Any]:
    value = args.get("range", "")
    if not value:
        return {}
    if value not in RANGES:
        raise FilterError("range", f"one of {', '.join(RANGES)}")
    return {"created_after": utcnow() - RANGES[value]}


def _metadata(args: MultiDict[str, str]) -> dict[str, Any]:
    pairs = []
    for line in args.getlist("metadata"):
        if not line.strip():
            continue
        match = _META.match(line.strip())
        if match is None or "\x00" in line:
            raise FilterError("metadata", "key=value, the key 1-64 letters, digits or . _ : -")
        pairs.append((match.group(1), match.group(2)))
    return {"metadata": tuple(pairs)} if pairs else {}


def _owner(args: MultiDict[str, str]) -> dict[str, Any]:
    """The API key that submitted the jobs, by its name (`genq keys list`)."""
    name = args.get("key", "").strip()
    if len(name) > 64 or "\x00" in name:
        raise FilterError("key", "not an API key's name")
    return {"owner_name": name} if name else {}


@dataclass(frozen=True)
class Filter:
    name: str  # the form field
    parse: Callable[[MultiDict[str, str]], dict[str, Any]]  # -> JobFilter keyword arguments


FILTERS: tuple[Filter, ...] = (
    Filter("status", _statuses),
    Filter("model", _model),
    Filter("range", _range),
    Filter("created_after", _time("created_after", "created_after")),
    Filter("created_before", _time("created_before", "created_before")),
    Filter("metadata", _metadata),
    Filter("key", _owner),
)
FIELDS = tuple(f.name for f in FILTERS)


def parse_filter(args: MultiDict[str, str]) -> tuple[JobFilter, dict[str, str]]:
    """The JobFilter the form asks for, and the errors by field (the filter leaves out fields in error)."""
    kwargs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in FILTERS:
        try:
            kwargs.update(f.parse(args))
        except FilterError as e:
            errors[e.field] = str(e)
    return JobFilter(**kwargs), errors


def filter_query(args: MultiDict[str, str]) -> list[tuple[str, str]]:
    """The filter's fields as query pairs (to carry the selection into a confirmation or the next page)."""
    return [(k, v) for k in FIELDS for v in args.getlist(k) if v]
