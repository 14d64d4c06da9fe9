"""Who is calling: the one place the OpenAI-compatible surface asks for the caller's identity.

Every decision that depends on the caller (whose files, whose batches, whose quota) goes through `caller()`.
It answers None while the service has no API keys, which means "no owner: everything is visible".
"""
from __future__ import annotations


def caller() -> str | None:
    """The calling API key's id, or None where the service runs without keys."""
    return None
