"""The job's `webhook` and `webhook_events_filter` fields, checked with the webhooks core at submission."""
from __future__ import annotations

from typing import Any

from api.errors import ApiError
from genq.webhooks import AllowList, WebhookValidationError, validate_events_filter, validate_webhook_url
from genq.webhooks.events import FILTER_FIELD


def parse_webhook(body: dict[str, Any], allow: AllowList) -> tuple[str | None, list[str] | None]:
    """(url, events filter) from a job body; (None, None) without a webhook. Raises ApiError 422 with the field.

    The URL's host is resolved now and every address checked (again at each delivery: see genq.webhooks).
    """
    url, events = body.get("webhook"), body.get(FILTER_FIELD)
    if url is None:
        if events is not None:
            raise ApiError(422, "invalid_value", "is only allowed with a webhook", FILTER_FIELD)
        return None, None
    try:
        validate_webhook_url(url, allow)
        return url, list(validate_events_filter(events))
    except WebhookValidationError as e:
        raise ApiError(422, e.code, e.message, e.field) from None
