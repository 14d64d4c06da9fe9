"""The operator's actions. Each is a GET that shows what it will do (the confirmation step) and a POST, by an
admin with the session's CSRF token, that does it and writes an audit record (who, what, target, address,
result). Every change goes through the same code the API and workers use: cancel through request_cancel,
retry through the state machine's retry transition, redelivery through the outbox.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlencode

from flask import abort, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from api.admin.auth import client_address, principal, require_admin
from api.admin.blueprint import bp
from api.admin.job_filters import filter_query, parse_filter
from api.services import services
from genq.broker import PublishError
from genq.status import JobStatus
from genq.store import audit, queues
from genq.store.jobs import RETRYABLE
from genq.store.leases import request_cancel
from genq.store.listing import JobFilter, count_jobs, list_jobs
from genq.webhooks.outbox import RedeliverRefused

BULK_LIMIT = 1000  # jobs one bulk action changes (the newest matching ones); run it again for more


@dataclass(frozen=True)
class Action:
    title: str  # "Cancel job"
    describe: Callable[[MultiDict[str, str]], str]  # what it will do, for the confirmation page
    perform: Callable[[MultiDict[str, str]], tuple[str, dict[str, Any]]]  # -> (notice, audit detail)
    target: Callable[[MultiDict[str, str]], str]  # what the audit record names
    danger: bool = False


def _job_id(args: MultiDict[str, str]) -> str:
    return args.get("job", "")


def _model(args: MultiDict[str, str]) -> str:
    model = args.get("model", "")
    if model not in services().catalog and model not in queues.paused_models(services().sessions):
        abort(404, f"no model {model!r}")
    return model


def _cancel(args: MultiDict[str, str]) -> tuple[str, dict[str, Any]]:
    outcome, job = request_cancel(services().store, _job_id(args))
    if job is None:
        abort(404, "no such job")
    return f"cancel: {outcome.value}", {"outcome": outcome.value, "status": job.status}


def _retry_one(job: Any) -> bool:
    svc = services()
    if not svc.store.retry(job):
        return False
    try:
        svc.publisher.publish(job.id, job.model, job.priority)
    except PublishError:
        pass  # queued and recorded: the sweeper re-publishes it
    return True


def _retry(args: MultiDict[str, str]) -> tuple[str, dict[str, Any]]:
    job = services().store.get(_job_id(args))
    if job is None:
        abort(404, "no such job")
    ok = _retry_one(job)
    return (f"retried: queued again as attempt {job.attempts + 1}" if ok
            else f"not retried: the job is {job.status}"), {"retried": ok, "from": job.status}


def _pause(args: MultiDict[str, str]) -> tuple[str, dict[str, Any]]:
    model = _model(args)
    changed = queues.pause(services().sessions, model, principal().username)
    services().queue_positions.forget(model)  # this process shows it at once, the others within the max age
    return (f"queue {model} paused" if changed else f"queue {model} was already paused"), {"changed": changed}


def _resume(args: MultiDict[str, str]) -> tuple[str, dict[str, Any]]:
    svc = services()
    model = _model(args)
    changed = queues.resume(svc.sessions, model)
    svc.queue_positions.forget(model)
    published = 0
    if changed:  # messages that arrived while paused were dropped: send the queue again, in its order
        for job_id, priority in queues.queued_in_order(svc.sessions, model):
            try:
                svc.publisher.publish(job_id, model, priority)
                published += 1
            except PublishError:
                break  # the sweeper re-publishes the rest
    return (f"queue {model} resumed ({published} jobs sent to workers)" if changed
            else f"queue {model} was not paused"), {"changed": changed, "published": published}


def _purge(args: MultiDict[str, str]) -> tuple[str, dict[str, Any]]:
    model = _model(args)
    n = queues.purge(services().store, model)
    services().queue_positions.forget(model)
    return f"{n} waiting jobs of {model} canceled", {"canceled": n}


def _redeliver(args: MultiDict[str, str]) -> tuple[str, dict[str, Any]]:
    svc = services()
    try:
        copy = svc.deliveries.redeliver(args.get("job", ""), args.get("delivery", ""))
    except KeyError:
        abort(404, "no such delivery")
    except RedeliverRefused as e:
        return f"not redelivered: {e}", {"refused": e.code}
    try:
        svc.webhook_publisher.publish(copy.id)
    except PublishError:
        pass  # due now: the webhook sweep publishes it
    return "redelivery queued", {"delivery": copy.id}


def _selection_filter(args: MultiDict[str, str], statuses: frozenset[JobStatus]) -> JobFilter | None:
    """The form's filter narrowed to the statuses the action applies to (None: it applies to none of them)."""
    where, errors = parse_filter(args)
    if errors:
        abort(400, "; ".join(f"{k}: {v}" for k, v in errors.items()))
    allowed = tuple(s.value for s in sorted(statuses))
    chosen = tuple(s for s in where.statuses if s in allowed) if where.statuses else allowed
    return replace(where, statuses=chosen) if chosen else None


def _selection(args: MultiDict[str, str], statuses: frozenset[JobStatus]) -> list[Any]:
    where = _selection_filter(args, statuses)
    return list_jobs(services().store, where, BULK_LIMIT)[0] if where is not None else []


def _bulk_cancel(args: MultiDict[str, str]) -> tuple[str, dict[str, Any]]:
    outcomes: dict[str, int] = {}
    for job in _selection(args, JobStatus.CANCELABLE):
        outcome, _ = request_cancel(services().store, job.id)
        outcomes[outcome.value] = outcomes.get(outcome.value, 0) + 1
    return "bulk cancel: " + (", ".join(f"{n} {k}" for k, n in outcomes.items()) or "nothing matched"), outcomes


def _bulk_retry(args: MultiDict[str, str]) -> tuple[str, dict[str, Any]]:
    jobs = _selection(args, RETRYABLE)
    done = sum(_retry_one(job) for job in jobs)
    return f"bulk retry: {done} of {len(jobs)} queued again", {"retried": done, "selected": len(jobs)}


def _count(statuses: frozenset[JobStatus]) -> Callable[[MultiDict[str, str]], str]:
    def describe(args: MultiDict[str, str]) -> str:
        where = _selection_filter(args, statuses)
        n = count_jobs(services().store, where, BULK_LIMIT) if where is not None else 0
        more = f" (at most {BULK_LIMIT}, the newest)" if n >= BULK_LIMIT else ""
        return f"{n} matching jobs{more}"
    return describe


def _selection_target(args: MultiDict[str, str]) -> str:
    return "jobs?" + urlencode(filter_query(args))


ACTIONS: dict[str, Action] = {
    "cancel": Action("Cancel job", lambda a: f"job {_job_id(a)}", _cancel, _job_id, danger=True),
    "retry": Action("Retry job", lambda a: f"job {_job_id(a)}, as a new attempt", _retry, _job_id),
    "pause": Action("Pause queue", lambda a: f"model {a.get('model')}: workers take none of its jobs until "
                    "resumed; new jobs are still accepted and wait", _pause, lambda a: a.get("model", "")),
    "resume": Action("Resume queue", lambda a: f"model {a.get('model')}", _resume, lambda a: a.get("model", "")),
    "purge": Action("Purge queue", lambda a: f"every waiting (queued) job of model {a.get('model')} is canceled",
                    _purge, lambda a: a.get("model", ""), danger=True),
    "redeliver": Action("Redeliver webhook", lambda a: f"delivery {a.get('delivery')} of job {a.get('job')}",
                        _redeliver, lambda a: a.get("delivery", "")),
    "bulk_cancel": Action("Cancel the selected jobs", _count(JobStatus.CANCELABLE), _bulk_cancel,
                          _selection_target, danger=True),
    "bulk_retry": Action("Retry the selected jobs", _count(RETRYABLE), _bulk_retry, _selection_target),
}


def _action(name: str) -> Action:
    action = ACTIONS.get(name)
    if action is None:
        abort(404, f"no action {name!r}")
    return action


@bp.get("/actions/<name>")
def confirm(name: str) -> Any:
    action = _action(name)
    return render_template("admin/confirm.html", name=name, action=action, description=action.describe(request.args),
                           fields=[(k, v) for k, v in request.args.items(multi=True)])


@bp.post("/actions/<name>")
@require_admin
def perform(name: str) -> Response:
    action = _action(name)
    args = request.form
    notice, detail = action.perform(args)
    audit.record(services().sessions, username=principal().username, action=name, target=action.target(args),
                 address=client_address(), detail=detail)
    target = args.get("next") or url_for("admin.overview")
    if not target.startswith("/admin") or target.startswith("//"):
        target = url_for("admin.overview")
    return redirect(target + ("&" if "?" in target else "?") + "notice=" + quote(notice))
