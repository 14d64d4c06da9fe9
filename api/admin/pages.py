"""The dashboard's pages other than jobs: overview (with the queues), workers, batches, failing webhooks,
the audit log."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import abort, render_template, request

from api.admin.blueprint import bp
from api.admin.overview import overview_data
from api.services import services
from genq.ids import is_id
from genq.store import admin_lists, audit, worker_registry
from genq.store.admin_lists import FAILING_KINDS
from genq.store.batches import BatchStore

PAGE = 50


@bp.get("/")
def overview() -> Any:
    return render_template("admin/overview.html", data=overview_data())


@bp.get("/workers")
def workers() -> Any:
    return render_template("admin/workers.html", workers=worker_registry.list_workers(services().sessions))


@bp.get("/workers/<path:worker_id>")
def worker(worker_id: str) -> Any:
    sessions = services().sessions
    row = worker_registry.get_worker(sessions, worker_id)
    if row is None:
        abort(404, "no such worker")
    state = next((w.state for w in worker_registry.list_workers(sessions) if w.row.id == worker_id), "lost")
    return render_template("admin/worker.html", worker=row, state=state,
                           jobs=worker_registry.jobs_of(sessions, worker_id))


@bp.get("/batches")
def batches() -> Any:
    before = None
    if request.args.get("before_at") and is_id(request.args.get("before_id", "")):
        try:
            before = (datetime.fromisoformat(request.args["before_at"]), request.args["before_id"])
        except ValueError:
            before = None
    page = admin_lists.batches_page(services().sessions, PAGE + 1, before)
    views = admin_lists.batch_views(services().sessions, page[:PAGE])
    return render_template("admin/batches.html", batches=views,
                           more=page[PAGE - 1] if len(page) > PAGE else None)


@bp.get("/batches/<batch_id>")
def batch(batch_id: str) -> Any:
    store = BatchStore(services().sessions)
    view = store.view(batch_id)
    if view is None:
        abort(404, "no such batch")
    after = request.args.get("after", type=int) or 0
    jobs = store.jobs(batch_id, after_line=after, limit=PAGE)
    return render_template("admin/batch.html", view=view, jobs=jobs, after=after,
                           next_after=jobs[-1].batch_line if len(jobs) == PAGE else None)


@bp.get("/webhooks")
def webhooks() -> Any:
    kind = request.args.get("kind", "retrying")
    if kind not in FAILING_KINDS:
        kind = "retrying"
    deliveries = admin_lists.failing_deliveries(services().sessions, kind, PAGE)
    last = admin_lists.last_attempts(services().sessions, [d.id for d in deliveries])
    return render_template("admin/webhooks.html", deliveries=deliveries, last=last, kind=kind,
                           kinds=list(FAILING_KINDS))


@bp.get("/audit")
def audit_log() -> Any:
    before = request.args.get("before", type=int)
    rows = audit.page(services().sessions, PAGE + 1, before, request.args.get("action") or None)
    return render_template("admin/audit.html", rows=rows[:PAGE],
                           next_before=rows[PAGE - 1].id if len(rows) > PAGE else None)


@bp.app_template_filter("ago")
def ago(value: datetime | None) -> str:
    if value is None:
        return "—"
    from genq.store.schema import utcnow

    s = (utcnow() - value).total_seconds()
    if s < 0:
        return "in " + _span(-s)
    return _span(s) + " ago"


def _span(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


@bp.app_template_filter("utc")
def utc(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "—"


@bp.app_template_filter("secs")
def secs(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s" if value < 600 else _span(value)
