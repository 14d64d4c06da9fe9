"""Jobs by model and status, read from `job_counts` (kept by triggers: migrations/versions/0006_admin.py), so
neither the dashboard nor /metrics ever counts the rows of `jobs`."""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from genq.status import JobStatus
from genq.store.schema import JobCount


def counts_by_model(sessions: sessionmaker[Session]) -> dict[str, dict[str, int]]:
    """{model: {status: n}} with every status present (0 where none)."""
    stmt = select(JobCount.model, JobCount.status, func.sum(JobCount.n)).group_by(JobCount.model, JobCount.status)
    out: dict[str, dict[str, int]] = defaultdict(lambda: {s.value: 0 for s in JobStatus})
    with sessions() as session:
        for model, status, n in session.execute(stmt):
            out[model][status] = int(n or 0)
    return dict(out)


def counts_by_status(sessions: sessionmaker[Session]) -> dict[str, int]:
    totals = {s.value: 0 for s in JobStatus}
    for per_model in counts_by_model(sessions).values():
        for status, n in per_model.items():
            totals[status] += n
    return totals
