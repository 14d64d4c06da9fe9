"""Listing jobs (filters, cursor pagination) and where a queued job stands in its queue.

Order: newest first by (created_at, id), a total order, so a cursor (the last row's pair, opaque to clients)
pages through a stable sequence even as new jobs arrive (they sort before the first page).

Queue position: the queued jobs of the same model that are ahead of a job: higher priority, or the same
priority and created earlier (ties by id). That is the order the broker delivers them in on Redis.
Estimated wait: (position + 1) ÷ the model's recent throughput, the jobs of that model finished in the last
WAIT_WINDOW (5 minutes) per second: a queued job starts about when that many more jobs have finished.
Unknown (null) when none finished in the window.

A single job's position and wait (every submit and poll) cost a bounded scan, not the queue's length: at most
POSITION_CAP jobs ahead are counted (past that the job shows `at_least`), and a busy model's throughput is
read from its last RATE_SAMPLE finished jobs. A page of jobs ranks its models' queues exactly.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, String, and_, bindparam, cast, exists, func, literal, or_, select, tuple_
from sqlalchemy.dialects import postgresql

from genq.ids import is_id
from genq.lifecycle import QueueInfo
from genq.status import JobStatus
from genq.store.jobs import JobStore, queue_paused
from genq.store.schema import ApiKey, Job, PausedQueue, utcnow

WAIT_WINDOW = timedelta(minutes=5)
POSITION_CAP = 1000  # jobs ahead a poll counts at most (past it: "at least 1,000")
RATE_SAMPLE = 200  # a busy model's throughput is read from its last this many finished jobs
MAX_CURSOR_CHARS = 256  # ours are about 100


class CursorError(ValueError):
    """The cursor is not one this service made."""


@dataclass(frozen=True)
class JobFilter:
    """Which jobs to list: every given condition must hold."""

    statuses: tuple[str, ...] = ()  # any of these
    model: str | None = None
    created_after: datetime | None = None  # strictly after
    created_before: datetime | None = None  # strictly before
    metadata: tuple[tuple[str, str], ...] = field(default=())  # metadata[key] is this string, for each pair
    owner: str | None = None  # only this API key's jobs (None: everyone's, as when auth is off)
    owner_name: str | None = None  # only the jobs of the API key of this name (the dashboard's filter)


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor stands for; raises CursorError."""
    if len(cursor) > MAX_CURSOR_CHARS:  # before json.loads, which recurses on nested arrays
        raise CursorError("not a cursor from this API (use next_cursor as given)")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if not is_id(job_id) or when.tzinfo is None:
            raise ValueError("not a job id and a zoned time")
        return when.astimezone(UTC), job_id
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise CursorError("not a cursor from this API (use next_cursor as given)") from None


def list_jobs(store: JobStore, where: JobFilter, limit: int, cursor: str | None = None) -> tuple[list[Job], str | None]:
    """One page of jobs, newest first, and the cursor of the next page (None on the last page)."""
    with store.sessions() as session:
        conditions = _conditions(where, session.get_bind().dialect.name)
        if cursor is not None:
            created, job_id = decode_cursor(cursor)
            conditions.append(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id)))
        stmt = select(Job).where(*conditions).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
        jobs = list(session.scalars(stmt))
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return jobs, (encode_cursor(jobs[-1]) if more else None)


def count_jobs(store: JobStore, where: JobFilter, cap: int) -> int:
    """How many jobs match, counting at most `cap` (a bounded scan: a bulk action's confirmation)."""
    with store.sessions() as session:
        conditions = _conditions(where, session.get_bind().dialect.name)
        matching = select(Job.id).where(*conditions).limit(cap).subquery()
        return int(session.scalar(select(func.count()).select_from(matching)) or 0)


def queue_info(store: JobStore, jobs: Iterable[Job], now: datetime | None = None) -> dict[str, QueueInfo]:
    """Queue position and estimated wait of each queued job among `jobs` (others are left out).

    Two statements whatever the number of jobs: the positions of all of them (one ranking of their models'
    queues, with whether each one's queue is paused), and the recent throughput of each of their models (one
    count per model)."""
    queued = [j for j in jobs if j.status == JobStatus.QUEUED.value]
    if not queued:
        return {}
    now = now or utcnow()
    models = sorted({j.model for j in queued})
    with store.sessions() as session:
        # the delivery order within a model's queue: higher priority first, then older, ties by id
        rank = func.row_number().over(
            partition_by=Job.model, order_by=(Job.priority.desc(), Job.created_at, Job.id)
        )
        ranked = (
            select(Job.id, (rank - 1).label("ahead"), queue_paused().label("paused"))
            .where(Job.status == JobStatus.QUEUED.value, Job.model.in_(models))
            .subquery()
        )
        ahead, paused = {}, set()
        for row in session.execute(
            select(ranked.c.id, ranked.c.ahead, ranked.c.paused).where(ranked.c.id.in_([j.id for j in queued]))
        ):
            ahead[row.id] = row.ahead
            if row.paused:
                paused.add(row.id)
        finished = dict(session.execute(
            select(Job.model, func.count()).where(
                Job.model.in_(models), Job.status.in_(sorted(JobStatus.TERMINAL)), Job.started_at.is_not(None),
                Job.completed_at >= now - WAIT_WINDOW,
            ).group_by(Job.model)
        ).all())
    out = {}
    for job in queued:
        rate = finished.get(job.model, 0) / WAIT_WINDOW.total_seconds()
        position = ahead.get(job.id, 0)  # not in the queue any more: a worker took it since it was read
        out[job.id] = QueueInfo(position, round((position + 1) / rate, 1) if rate > 0 else None,
                                job.id in paused)
    return out


def queue_info_one(store: JobStore, job: Job, now: datetime | None = None) -> QueueInfo | None:
    """`queue_info` of one job (what a submit or a poll shows; None unless it is queued), in one statement of
    bounded cost, however long the queue and however busy the model: the jobs ahead are counted on the
    (model, status, priority, created_at) index up to POSITION_CAP (past it, the position is a lower bound,
    `at_least`), and the throughput is read from the model's last RATE_SAMPLE finished jobs in the window
    (their count over the window, or, when there are that many, over the time they span)."""
    if job.status != JobStatus.QUEUED.value:
        return None
    now = now or utcnow()
    with store.reads() as session:
        n_higher, n_earlier, done, oldest, is_paused = session.execute(_QUEUE_INFO_ONE, {
            "model": job.model, "priority": job.priority, "created_at": job.created_at, "job_id": job.id,
            "since": now - WAIT_WINDOW,
        }).one()
    position = min(POSITION_CAP, n_higher + n_earlier)
    return queue_info_of(position, done, oldest, bool(is_paused), now, at_least=position >= POSITION_CAP)


def queue_info_of(position: int, done: int, oldest: datetime | None, paused: bool, now: datetime,
                  at_least: bool = False) -> QueueInfo:
    """A queued job's QueueInfo from its position and its model's `done` finished jobs in the window (at most
    RATE_SAMPLE; `oldest`: the first of them to end): the wait is (position + 1) / the model's throughput, its
    count over the window, or, for a busy model, over the time its last RATE_SAMPLE jobs span."""
    span = WAIT_WINDOW.total_seconds()
    if done >= RATE_SAMPLE and oldest is not None:
        span = max(1.0, (now - utc(oldest)).total_seconds())
    rate = done / span
    return QueueInfo(position, round((position + 1) / rate, 1) if rate > 0 else None, paused, at_least=at_least)


def recent_finished(model: Any) -> Any:
    """The end times of `model`'s last RATE_SAMPLE jobs that ran and finished since :since (a subquery)."""
    return select(Job.completed_at).where(
        Job.model == model, Job.completed_at >= bindparam("since", type_=Job.completed_at.type),
        Job.status.in_(sorted(JobStatus.TERMINAL)), Job.started_at.is_not(None),
    ).order_by(Job.completed_at.desc()).limit(RATE_SAMPLE).subquery()


def _queue_info_one_statement() -> Select[Any]:
    """queue_info_one's statement, built once (building it is most of a poll's Python time otherwise): the
    jobs ahead in two index ranges (higher priority; same priority and earlier, ties by id), each counted to
    POSITION_CAP, the model's last RATE_SAMPLE finished jobs since `since`, and whether its queue is paused."""
    model, priority = bindparam("model", type_=Job.model.type), bindparam("priority", type_=Job.priority.type)
    created_at, job_id = bindparam("created_at", type_=Job.created_at.type), bindparam("job_id", type_=Job.id.type)
    queued = (Job.model == model, Job.status == JobStatus.QUEUED.value)
    higher = select(Job.id).where(*queued, Job.priority > priority).limit(POSITION_CAP).subquery()
    earlier = select(Job.id).where(
        *queued, Job.priority == priority,
        tuple_(Job.created_at, Job.id) < tuple_(created_at, job_id),  # one range of ix_jobs_queued_model_order
    ).limit(POSITION_CAP).subquery()
    recent = recent_finished(model)
    return select(
        select(func.count()).select_from(higher).scalar_subquery(),
        select(func.count()).select_from(earlier).scalar_subquery(),
        select(func.count()).select_from(recent).scalar_subquery(),
        select(func.min(recent.c.completed_at)).scalar_subquery(),
        exists().where(PausedQueue.model == model),
    )


_QUEUE_INFO_ONE = _queue_info_one_statement()


def utc(when: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones from a bare subquery)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _conditions(where: JobFilter, dialect: str) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.owner is not None:
        conditions.append(Job.owner == where.owner)
    if where.owner_name is not None:  # by the key's unique name: at most one id, then the (owner, ...) indexes
        conditions.append(Job.owner == select(ApiKey.id).where(ApiKey.name == where.owner_name).scalar_subquery())
    if where.statuses:
        conditions.append(Job.status.in_(where.statuses))
    if where.model is not None:
        conditions.append(Job.model == where.model)
    if where.created_after is not None:
        conditions.append(Job.created_at > where.created_after)
    if where.created_before is not None:
        conditions.append(Job.created_at < where.created_before)
    for key, value in where.metadata:
        conditions.append(_metadata_equals(key, value, dialect))
    return conditions


def _metadata_equals(key: str, value: str, dialect: str) -> ColumnElement[bool]:
    """metadata[key] is the string `value` (not a number or other JSON value that prints the same)."""
    if dialect == "postgresql":
        # containment: indexable by a GIN index on metadata should listing by it become hot
        wanted: Any = cast(literal(json.dumps({key: value}), String), postgresql.JSONB)
        return Job.client_metadata.op("@>")(wanted)
    path = '$."' + key + '"'  # the caller allows no quote or backslash in keys
    return and_(func.json_type(Job.client_metadata, path) == "text",
                func.json_extract(Job.client_metadata, path) == value)
