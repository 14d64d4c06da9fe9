"""What the views call: built once per app by create_app, reached through `services()`."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from genq.catalog import Catalog
from genq.config import Settings
from genq.jobs import JobStore
from genq.queue import Publisher

EXTENSION_KEY = "genq"


@dataclass
class Services:
    settings: Settings
    db: Engine
    store: JobStore
    catalog: Catalog
    publisher: Publisher


def services() -> Services:
    """The running app's services."""
    return current_app.extensions[EXTENSION_KEY]
