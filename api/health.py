"""/healthz: the API answers and its database is reachable."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from api.errors import error_response
from api.services import services
from genq.db import ping

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Response:
    try:
        ping(services().db)
    except (SQLAlchemyError, OSError) as e:
        log.warning("health check: database unavailable: %s", e)
        return error_response(503, "database_unavailable", "the database is not reachable")
    return jsonify({"status": "ok"})
