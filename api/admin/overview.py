"""What the overview shows, as one dict (the page renders it; /admin/data/overview.json refreshes it): jobs by
status (from job_counts, never a count of jobs), each model's queue (depth, oldest waiting job, paused), and
the last hour's throughput and latency per minute."""
from __future__ import annotations

from typing import Any

from api.services import services
from genq.serialize import iso
from genq.store import queues
from genq.store.admin_stats import hour_stats
from genq.store.job_counts import counts_by_model
from genq.store.schema import utcnow
from genq.store.worker_registry import list_workers


def overview_data() -> dict[str, Any]:
    svc = services()
    now = utcnow()
    by_model = counts_by_model(svc.sessions)
    paused = queues.paused_models(svc.sessions)
    served = sorted(m.name for m in svc.catalog.all())
    names = sorted(set(served) | set(paused) | {m for m, c in by_model.items() if c.get("queued") or c.get("running")})
    oldest = queues.oldest_queued(svc.sessions, [m for m in names if by_model.get(m, {}).get("queued")])
    totals: dict[str, int] = {}
    for counts in by_model.values():
        for status, n in counts.items():
            totals[status] = totals.get(status, 0) + n
    queue_rows = []
    for name in names:
        counts = by_model.get(name, {})
        p = paused.get(name)
        queue_rows.append({
            "model": name, "served": name in served, "queued": counts.get("queued", 0),
            "running": counts.get("running", 0),
            "oldest_age_s": round((now - oldest[name]).total_seconds(), 1) if name in oldest else None,
            "paused": p is not None, "paused_at": iso(p.paused_at) if p else None,
            "paused_by": p.paused_by if p else None,
        })
    stats = hour_stats(svc.sessions, now)
    workers = list_workers(svc.sessions, now)
    return {
        "now": iso(now), "statuses": totals, "queues": queue_rows, "minutes": stats.minutes, "hour": stats.hour,
        "workers": {"up": sum(w.state == "up" for w in workers), "lost": sum(w.state == "lost" for w in workers)},
    }
