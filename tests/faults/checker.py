"""The total-queue checker: after the faults, once the service is quiet, is every accepted job accounted for?

- lost: an accepted job with no row, or a finished job that asked for a webhook whose `job.completed` never
  reached the receiver;
- duplicated: a job with two results, that is more than one terminal status event in its event log, more
  than one `job.completed` delivery recorded for it, or its completion received under two `webhook-id`s;
- stuck: a job not terminal by the end.
The same `webhook-id` received more than once (a redelivery) is allowed: that is how a receiver de-duplicates.
"""
from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select

from genq.store.schema import WebhookDelivery

from .cluster import TERMINAL, Cluster

TERMINAL_EVENTS = set(TERMINAL)


@dataclass
class Verdict:
    submitted: int
    injected: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.stuck)

    def summary(self) -> str:
        return (f"faults: submitted={self.submitted} injected={self.injected} lost={len(self.lost)} "
                f"duplicated={len(self.duplicated)} stuck={len(self.stuck)}")


def check(cluster: Cluster, ids: list[str], injected: int, webhook_wait_s: float = 60) -> Verdict:
    verdict = Verdict(submitted=len(ids), injected=injected)
    jobs = cluster.jobs(ids)
    verdict.lost += [i for i in ids if i not in jobs]
    verdict.stuck += [i for i, j in jobs.items() if j.status not in TERMINAL]
    verdict.statuses.update(f"{j.status}:{j.error_code}" if j.error_code else j.status for j in jobs.values())
    events = cluster.status_events(ids)
    verdict.duplicated += [i for i, ev in events.items() if sum(e in TERMINAL_EVENTS for e in ev) > 1]

    assert cluster.db is not None
    with cluster.db.connect() as conn:
        completed = dict(conn.execute(
            select(WebhookDelivery.job_id, func.count()).where(
                WebhookDelivery.job_id.in_(ids), WebhookDelivery.event == "job.completed",
                WebhookDelivery.redelivery_of.is_(None))
            .group_by(WebhookDelivery.job_id)).all())
    verdict.duplicated += [i for i, n in completed.items() if n > 1 and i not in verdict.duplicated]

    want = {i for i, j in jobs.items() if j.status in TERMINAL and j.webhook}
    deadline = time.monotonic() + webhook_wait_s
    while True:
        seen: dict[str, set[str]] = defaultdict(set)
        for r in list(cluster.receiver.received):
            body = json.loads(r.body)
            if body.get("status") in TERMINAL:
                seen[body["id"]].add(r.headers.get("webhook-id", ""))
        if want <= set(seen) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    verdict.lost += sorted(want - set(seen))
    verdict.duplicated += [i for i, hooks in seen.items() if len(hooks) > 1 and i not in verdict.duplicated]
    return verdict
