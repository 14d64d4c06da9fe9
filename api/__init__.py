"""The Flask API: `create_app(settings)` builds it; `genq api` serves it.

One blueprint per resource (`jobs`, with its `events` and `deliveries` nested; `batches`, `webhooks`,
`models`, `health`, `openapi`, `metrics`; the OpenAI-compatible surface, the `api.openai` package, under
/openai/v1) and the admin dashboard (`admin/`, HTML pages); views parse the request (`parsing`,
`batch_parsing`, `list_query`, `prefer`), call the core and answer, every error in one shape (`errors`);
`http_server`, `http_limits`, `json_depth` and `stream_limits` bound what a request may cost, `event_hub`
feeds every event stream of the process, `auth` says whose request it is (API keys) and `quota_limits`
answers a key over its quota; `gunicorn_conf` is how `genq api` serves it, `active_requests` how many
requests of a process run at once. It imports `genq` and the
torch-free parts of `models` (`params`, `echo`, `prompting`'s errors), never `workers` or torch.
"""
from __future__ import annotations

from flask import Flask
from sqlalchemy import event

from api.active_requests import ActiveRequests, waiting
from api.auth import auth_required, authenticate, log_mode
from api.errors import register_error_handlers
from api.event_hub import EventHub
from api.http_limits import check_request_limits
from api.services import EXTENSION_KEY, Services
from api.stream_limits import StreamLimits
from genq.broker import Publisher, make_celery
from genq.catalog import Catalog
from genq.relay import PublishRelay
from genq.settings import Settings
from genq.store.api_keys import ApiKeyStore
from genq.store.bare_connections import bare_connections
from genq.store.db import make_engine, make_reader, make_session_factory
from genq.store.jobs import JobStore
from genq.store.queue_snapshot import QueuePositions
from genq.webhooks.dispatch import WebhookPublisher
from genq.webhooks.outbox import DeliveryStore
from genq.webhooks.secret_store import SecretStore

BARE_CONNECTIONS = 8  # per API process, for the key and job reads and the job insert (genq/store/bare_connections.py)


def create_app(settings: Settings | None = None) -> Flask:
    """The API for `settings` (read from the environment if not given). Views reach services via api.services."""
    # blueprints import api.services, which must exist first
    from api import admin, batches, health, jobs, metrics, models, openapi, webhooks
    from api.openai import routes as openai_routes

    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder=None)  # an API: no /static/<path> route serving nothing
    app.wsgi_app = ActiveRequests(app.wsgi_app, settings.api_active_requests)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # no pre-ping (a dropped connection costs one request a 503, not every request a round trip), and
    # single-statement reads (the key of each request, a job, its queue position) outside any transaction
    db = make_engine(settings.database_url, pre_ping=False)
    sessions = make_session_factory(db)
    reads = make_session_factory(make_reader(db, pre_ping=False))
    celery = make_celery(settings, main="genq-api")
    webhook_publisher = WebhookPublisher(celery)
    # the key and the job of every request, and the insert of a job, on bare connections (PostgreSQL; None on
    # SQLite), closed with `db`
    bare = bare_connections(settings.database_url, BARE_CONNECTIONS)
    if bare is not None:
        event.listen(db, "engine_disposed", lambda _engine: bare.close())
    store = JobStore(sessions, on_deliveries=webhook_publisher.publish_many, reads=reads, bare=bare,
                     wait=waiting)  # a submission waiting for its group's commit gives up its turn
    publisher = Publisher(celery)
    required = auth_required(settings.auth, settings.host)
    log_mode(required, settings.host)
    app.extensions[EXTENSION_KEY] = Services(
        settings=settings,
        db=db,
        store=store,
        queue_positions=QueuePositions(store, settings.queue_info_max_age_ms / 1000),
        catalog=Catalog(settings),
        publisher=publisher,
        relay=PublishRelay(store, publisher),  # started by the first job the broker refuses
        sessions=sessions,
        secrets=SecretStore(sessions, settings.webhook_secret_grace),
        deliveries=DeliveryStore(sessions),
        webhook_publisher=webhook_publisher,
        event_hub=EventHub(sessions, settings.events_poll_ms / 1000),
        stream_limits=StreamLimits(settings.events_max_streams, settings.events_max_streams_per_client),
        auth_required=required,
        api_keys=ApiKeyStore(sessions, reads, bare),
    )
    for module in (jobs, batches, webhooks, models, health, openapi, metrics):  # one blueprint per resource
        app.register_blueprint(module.bp)
    app.register_blueprint(admin.bp)  # the dashboard: HTML pages, not in the OpenAPI document
    admin.auth.ensure_startup_admin(sessions, settings.admin_user, settings.admin_password)
    app.before_request(check_request_limits)  # before any view reads the request
    metrics.instrument(app)  # HTTP requests by route and status, for GET /metrics
    app.before_request(authenticate)  # then whose request it is
    register_error_handlers(app)
    openai_routes.register(app)  # the OpenAI-compatible surface, /openai/v1, with its own error shape
    return app
