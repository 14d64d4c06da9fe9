"""The Flask API: `create_app(settings)` builds it; `genq api` serves it."""
from __future__ import annotations

from flask import Flask

from api.errors import register_error_handlers
from api.services import EXTENSION_KEY, Services
from genq.catalog import Catalog
from genq.config import Settings
from genq.db import make_engine, make_session_factory
from genq.jobs import JobStore
from genq.queue import Publisher, make_celery


def create_app(settings: Settings | None = None) -> Flask:
    """The API for `settings` (read from the environment if not given). Views reach services via api.services."""
    from api import catalog, health, job_lifecycle, jobs  # blueprints import api.services, which must exist first

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    db = make_engine(settings.database_url)
    app.extensions[EXTENSION_KEY] = Services(
        settings=settings,
        db=db,
        store=JobStore(make_session_factory(db)),
        catalog=Catalog(settings),
        publisher=Publisher(make_celery(settings, main="genq-api")),
    )
    for module in (jobs, job_lifecycle, catalog, health):
        app.register_blueprint(module.bp)
    register_error_handlers(app)
    return app
