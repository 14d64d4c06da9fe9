"""The admin dashboard at /admin: server-rendered pages (Jinja) over the database, a little vendored
JavaScript for the live charts, and the operator's actions, each confirmed and audited.

`auth` (login, sessions, CSRF, roles), `pages` (overview, queues, workers, batches, webhooks, audit),
`job_pages` and `job_filters` (the job list and detail), `actions` (cancel, retry, pause/resume, purge,
redeliver, bulk), `data` (the JSON the charts refresh from). It reads and writes through genq.store only.
These are HTML pages for people, not API operations: they are not in the OpenAPI document.
"""
from __future__ import annotations

from flask import render_template
from werkzeug.exceptions import HTTPException

from api.admin import actions, auth, data, job_pages, pages  # noqa: F401  (their routes join bp)
from api.admin.blueprint import bp

__all__ = ["auth", "bp"]


def _register() -> None:
    bp.before_request(auth.guard)
    bp.after_request(auth.secure_headers)
    bp.register_error_handler(HTTPException, _error_page)


def _error_page(e: HTTPException) -> tuple[str, int]:
    """Errors of the dashboard are pages for people (the API's are JSON)."""
    return render_template("admin/error.html", code=e.code, name=e.name, description=e.description), e.code or 500


_register()
