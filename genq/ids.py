"""Every id the service makes (jobs, batches, webhook deliveries): canonical lowercase uuid4 text.

`new_id` makes them; `is_id` checks a value from outside (a URL, a cursor) before it reaches the database.
"""
from __future__ import annotations

import uuid


def new_id() -> str:
    """A fresh id."""
    return str(uuid.uuid4())


def is_id(value: object) -> bool:
    """Whether `value` could be an id the service made. Anything else names nothing, so a lookup can answer
    "not found" without asking the database (which refuses some strings outright, e.g. ones holding NUL)."""
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False
