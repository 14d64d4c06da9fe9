"""/healthz: the API answers, and so do its dependencies (genq/health.py): the database, its schema at the
migrations' head, the broker.

Healthy: 200 `{"status": "ok", "checks": {name: detail}}`. Otherwise 503 in the one error shape with
`Retry-After`; the code is the first failing check's (`database_unavailable`, `database_not_migrated`,
`broker_unavailable`) and the message names every failing one.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from api.errors import unavailable_response
from api.services import services
from genq.health import check_broker, check_database

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Response:
    svc = services()
    checks = [*check_database(svc.db), check_broker(svc.publisher.app)]
    failed = [c for c in checks if not c.ok]
    if failed:
        message = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        log.warning("health check failed: %s", message)
        return unavailable_response(failed[0].code or "unavailable", message)
    return jsonify({"status": "ok", "checks": {c.name: c.detail for c in checks}})
