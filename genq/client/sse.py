"""Server-Sent Events as a job's event stream sends them (`GET /v1/jobs/{id}/events`)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One event: `status`, `delta`, `restart` or `done`; `id` its per-job sequence number; `data` parsed JSON."""

    event: str
    data: Any
    id: str | None = None


def parse_events(lines: Iterable[str]) -> Iterator[Event]:
    """Events from the stream's lines (without their line ends); comments (keep-alives) are skipped."""
    name, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Event(name, _json("\n".join(data)), event_id)
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    if data:
        yield Event(name, _json("\n".join(data)), event_id)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
