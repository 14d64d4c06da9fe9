"""A job's status, and the groups of statuses every rule is written in (the one place they are listed).

    queued → running → succeeded | failed | canceled
    queued → canceled | expired | failed
    running → running (a takeover of a lost worker's job)
    failed | canceled | expired → queued (an operator's retry: TERMINAL is final unless an operator says so)

The state machine that moves a job between them is genq.store.jobs; statuses are stored as their string values.
"""
from __future__ import annotations

import enum
from typing import ClassVar


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"  # its queue time-to-live ran out before any worker started it

    # groups (not members: assigned below the class). A status compares and hashes as its string value, so
    # `job.status in JobStatus.TERMINAL` holds for the stored strings too.
    TERMINAL: ClassVar[frozenset[JobStatus]]  # final: a job in one changes no more, and its event stream ends
    LIVE: ClassVar[frozenset[JobStatus]]  # not final yet: waiting or running
    CANCELABLE: ClassVar[frozenset[JobStatus]]  # what a cancel applies to (a queued job at once, a running one
    #                                             by a request to its worker)

    @property
    def is_terminal(self) -> bool:
        return self in JobStatus.TERMINAL


JobStatus.TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED})
JobStatus.LIVE = frozenset(JobStatus) - JobStatus.TERMINAL
JobStatus.CANCELABLE = JobStatus.LIVE
