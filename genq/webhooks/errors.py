"""The one validation error shape of the webhooks package.

Every input the package refuses raises a `WebhookValidationError`: a `ValueError` that carries the
client-facing field name and a stable reason code, so the API can turn it into its field-level
error response without parsing messages.
"""
from __future__ import annotations


class WebhookValidationError(ValueError):
    """A webhook setting is invalid: `field` names it as the client spelled it, `code` says why."""

    def __init__(self, field: str, code: str, message: str):
        super().__init__(f"{field}: {message} ({code})")
        self.field = field
        self.code = code
        self.message = message
