"""The dashboard's throughput and latency over the last hour, per minute, from the jobs that finished in it.

One query on the index of `completed_at` (ix_jobs_completed_at): on PostgreSQL the database aggregates
(count, tokens, percentile_cont of queue wait and run time, per minute and for the hour, in one scan);
SQLite returns the hour's rows and Python aggregates them (an embedded service finishes few jobs an hour).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from genq.store.schema import utcnow

# date_part, not extract: extract returns numeric since PostgreSQL 14, several times slower to compute.
# One scan of the hour for both the minutes and the whole hour (the grouping set `()` is the hour's row,
# minute NULL); each percentile pair is one ordered-set aggregate, so one sort per measure.
_PG_STATS = text("""
SELECT minute, count(*) AS finished, count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       coalesce(sum(completion_tokens), 0) AS tokens, coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY wait) AS wait,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY run) AS run
FROM (SELECT floor(date_part('epoch', completed_at) / 60)::bigint AS minute, status, completion_tokens,
             prompt_tokens, date_part('epoch', started_at - created_at) AS wait,
             date_part('epoch', completed_at - started_at) AS run
      FROM jobs WHERE completed_at >= :since) finished
GROUP BY GROUPING SETS ((minute), ())
""")
_ROWS = text("SELECT status, created_at, started_at, completed_at, completion_tokens, prompt_tokens FROM jobs "
             "WHERE completed_at >= :since")
_KEYS = ("wait_p50", "wait_p95", "run_p50", "run_p95")


@dataclass(frozen=True)
class HourStats:
    minutes: list[dict[str, Any]]  # one per minute of the hour, oldest first: minute (epoch s), finished, tokens, ...
    hour: dict[str, Any]  # the whole hour: finished, tokens, prompt_tokens, wait/run p50/p95 (seconds or None)


def hour_stats(sessions: sessionmaker[Session], now: datetime | None = None) -> HourStats:
    now = now or utcnow()
    # the hour is the current minute and the 59 before it, whole: every finished job falls in one of them
    first = math.floor(now.timestamp() / 60) - 59
    since = datetime.fromtimestamp(first * 60, UTC)
    with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            by_minute, hour = {}, {}
            for r in session.execute(_PG_STATS, {"since": since}):
                row = dict(r._mapping)
                for measure in ("wait", "run"):
                    p50, p95 = row.pop(measure) or (None, None)
                    row[f"{measure}_p50"], row[f"{measure}_p95"] = p50, p95
                if r.minute is None:
                    hour = row
                else:
                    by_minute[int(r.minute)] = row
        else:
            by_minute, hour = _aggregate(list(session.execute(_ROWS, {"since": since.replace(tzinfo=None)})))
    minutes = []
    for m in range(first, first + 60):
        row = by_minute.get(m, {})
        minutes.append({"minute": m * 60, "finished": int(row.get("finished") or 0),
                        "succeeded": int(row.get("succeeded") or 0), "tokens": int(row.get("tokens") or 0),
                        **{k: _num(row.get(k)) for k in _KEYS}})
    hour = {"finished": int(hour.get("finished") or 0), "tokens": int(hour.get("tokens") or 0),
            "prompt_tokens": int(hour.get("prompt_tokens") or 0), **{k: _num(hour.get(k)) for k in _KEYS}}
    return HourStats(minutes, hour)


def _num(value: Any) -> float | None:
    return round(float(value), 3) if value is not None else None


def _parse(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _aggregate(rows: list[Any]) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    groups: dict[int, list[Any]] = defaultdict(list)
    for r in rows:
        completed = _parse(r.completed_at)
        if completed is not None:
            groups[math.floor(completed.replace(tzinfo=UTC).timestamp() / 60)].append(r)  # stored naive UTC
    by_minute = {m: _summary(rs) for m, rs in groups.items()}
    return by_minute, _summary(rows)


def _summary(rows: list[Any]) -> dict[str, Any]:
    waits, runs = [], []
    tokens = prompt = succeeded = 0
    for r in rows:
        created, started, completed = _parse(r.created_at), _parse(r.started_at), _parse(r.completed_at)
        tokens += r.completion_tokens or 0
        prompt += r.prompt_tokens or 0
        succeeded += r.status == "succeeded"
        if started is not None and created is not None:
            waits.append((started - created).total_seconds())
        if started is not None and completed is not None:
            runs.append((completed - started).total_seconds())
    return {"finished": len(rows), "succeeded": succeeded, "tokens": tokens, "prompt_tokens": prompt,
            "wait_p50": _pct(waits, 0.5), "wait_p95": _pct(waits, 0.95),
            "run_p50": _pct(runs, 0.5), "run_p95": _pct(runs, 0.95)}


def _pct(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont."""
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)
