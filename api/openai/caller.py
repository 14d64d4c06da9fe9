"""Who is calling: the one place the OpenAI-compatible surface asks for the caller's identity.

Every decision that depends on the caller (whose files, whose batches, whose jobs) goes through `caller()`, and
the submit path takes the caller's quotas from `quota()`. Both answer None when the API runs without keys
(GENQ_AUTH=off), which means "no owner: everything is visible".
"""
from __future__ import annotations

from api.auth import current_key_id, current_quota
from genq.store.quotas import Quota


def caller() -> str | None:
    """The calling API key's id, or None where the service runs without keys."""
    return current_key_id()


def quota() -> Quota | None:
    """The calling API key's quotas (and the owner of the jobs it submits), or None without keys."""
    return current_quota()
