"""What the views call: built once per app by create_app, reached through `services()`."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.event_hub import EventHub
from api.stream_limits import StreamLimits
from genq.broker import Publisher
from genq.catalog import Catalog
from genq.relay import PublishRelay
from genq.settings import Settings
from genq.store.api_keys import ApiKeyStore
from genq.store.jobs import JobStore
from genq.store.queue_snapshot import QueuePositions
from genq.webhooks.dispatch import WebhookPublisher
from genq.webhooks.outbox import DeliveryStore
from genq.webhooks.secret_store import SecretStore

EXTENSION_KEY = "genq"


@dataclass
class Services:
    settings: Settings
    db: Engine
    store: JobStore
    queue_positions: QueuePositions  # a queued job's position and wait, from a snapshot of its model's queue
    catalog: Catalog
    publisher: Publisher
    relay: PublishRelay  # publishes the jobs the broker refused at submission, once it answers (genq/relay.py)
    # webhooks, events, batches
    sessions: sessionmaker[Session]
    secrets: SecretStore
    deliveries: DeliveryStore
    webhook_publisher: WebhookPublisher
    # event streams: the process's one poller of the event log, and the caps on open streams
    event_hub: EventHub
    stream_limits: StreamLimits
    # API keys (api/auth.py): whether a key is required, and where keys are found
    auth_required: bool
    api_keys: ApiKeyStore


def services() -> Services:
    """The running app's services."""
    return current_app.extensions[EXTENSION_KEY]
