"""The job list (filters, cursor paging) and a job's detail page."""
from __future__ import annotations

from typing import Any

from flask import abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from api.admin.blueprint import bp
from api.admin.job_filters import STATUSES, filter_query, parse_filter
from api.services import services
from genq.ids import is_id
from genq.model_limits import prompt_encoder
from genq.store.job_events import read_events_of_jobs
from genq.store.listing import CursorError, list_jobs, queue_info
from genq.store.queues import paused_models

PAGE_SIZE = 50


@bp.get("/jobs")
def jobs() -> Any:
    svc = services()
    job_id = request.args.get("id", "").strip()
    if job_id:  # a job by id: straight to it
        if is_id(job_id) and svc.store.get(job_id) is not None:
            return redirect(url_for("admin.job", job_id=job_id))
        return render_template("admin/jobs.html", **_list_context([], None, {"id": "no job with this id"}))
    where, errors = parse_filter(request.args)
    cursor = request.args.get("cursor") or None
    try:
        page, next_cursor = list_jobs(svc.store, where, PAGE_SIZE, cursor)
    except CursorError:
        page, next_cursor = [], None
        errors["cursor"] = "not a cursor of this list"
    return render_template("admin/jobs.html", **_list_context(page, next_cursor, errors))


def _list_context(page: list[Any], next_cursor: str | None, errors: dict[str, str]) -> dict[str, Any]:
    svc = services()
    query = filter_query(request.args)
    return {
        "jobs": page, "next_cursor": next_cursor, "errors": errors, "statuses": STATUSES,
        "chosen": set(request.args.getlist("status")), "args": request.args, "query": query,
        "models": sorted(m.name for m in svc.catalog.all()), "paged": bool(request.args.get("cursor")),
    }


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> Any:
    svc = services()
    found = svc.store.get(job_id)
    if found is None:
        abort(404, f"no job {job_id}")
    with svc.sessions() as session:
        events = read_events_of_jobs(session, {found.id: 0}, limit=2000)
    queue = queue_info(svc.store, [found]).get(found.id)
    attempts = _attempts(events)
    deltas = sum(1 for e in events if e.kind == "delta")
    return render_template(
        "admin/job.html", job=found, events=[e for e in events if e.kind == "status"], deltas=deltas,
        attempts=attempts, queue=queue, paused=found.model in paused_models(svc.sessions),
        deliveries=svc.deliveries.for_job(found.id), rendered_prompt=_rendered_prompt(found),
    )


def _attempts(events: list[Any]) -> list[dict[str, Any]]:
    """Each attempt from the event log: when it started, and how it ended (the next status event)."""
    out: list[dict[str, Any]] = []
    for e in events:
        if e.kind != "status":
            continue
        status = e.data.get("status")
        if status == "running":
            out.append({"number": e.data.get("attempt"), "started_at": e.created_at, "ended": None,
                        "ended_at": None})
        elif out and out[-1]["ended"] is None:
            out[-1]["ended"], out[-1]["ended_at"] = status, e.created_at
    return out


def _rendered_prompt(job: Any) -> str | None:
    """The text the model was given: the chat template applied to the messages (None if not loadable)."""
    messages = job.input.get("messages")
    if not messages:
        return job.input.get("prompt")
    served = services().catalog.get(job.model)
    if served is None:
        return None
    encoder = prompt_encoder(served.spec.source)
    if encoder is None or encoder[1] is None:
        return None
    try:
        return str(encoder[1].render(messages, add_generation_prompt=True))
    except Exception:  # a template that cannot render this input: the worker reports it on the job
        return None


def back(default: str) -> Response:
    target = request.form.get("next") or request.args.get("next") or default
    if not target.startswith("/admin") or target.startswith("//"):
        target = default
    return redirect(target)
