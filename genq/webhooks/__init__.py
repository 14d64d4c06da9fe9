"""Everything about webhooks: which events a status change fires (`events`), signing (`signing`), URL safety
(`urls`, `transport`), the retry schedule (`retry`) and one signed HTTP attempt (`deliver`) need no database;
the outbox of deliveries and their attempts (`outbox`), publishing and the sweep (`dispatch`), one delivery
end to end (`delivery_runner`) and the signing secrets (`secret_store`) keep their state in it through
`genq.store`. The database-free modules import nothing but each other and `genq.status`.
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
