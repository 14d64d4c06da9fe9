"""Signed webhooks, without a database: signing, URL rules, retry schedule, one delivery attempt, events.

The service stores jobs' webhook settings and every `Attempt`; these modules decide and do the rest.
"""
from genq.webhooks.deliver import Attempt, deliver
from genq.webhooks.errors import WebhookValidationError
from genq.webhooks.events import event_body, events_for_status, message_id, validate_events_filter
from genq.webhooks.retry import RetryPolicy
from genq.webhooks.signing import generate_secret, parse_secret, sign, signed_headers
from genq.webhooks.urls import AllowList, WebhookURLError, validate_webhook_url

__all__ = [
    "AllowList",
    "Attempt",
    "RetryPolicy",
    "WebhookURLError",
    "WebhookValidationError",
    "deliver",
    "event_body",
    "events_for_status",
    "generate_secret",
    "message_id",
    "parse_secret",
    "sign",
    "signed_headers",
    "validate_events_filter",
    "validate_webhook_url",
]
