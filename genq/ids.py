"""Ids as the service makes them: canonical lowercase uuid4 text (jobs, batches, webhook deliveries)."""
from __future__ import annotations

import uuid


def is_canonical_id(value: object) -> bool:
    """Whether `value` could be an id the service made. Anything else names nothing, so a lookup can answer
    "not found" without asking the database (which refuses some strings outright, e.g. ones holding NUL)."""
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False
