"""`genq worker` with a test-only poison hook: a job whose prompt is POISON_PROMPT kills the worker process
(`os._exit`, as a segfault or the out-of-memory killer would) when it starts running. Only the fault tests start
workers through this script; the production worker (`python -m genq worker`) has no such hook.

    python tests/faults/poison_worker.py worker --models tiny --queues models
"""
from __future__ import annotations

import os
import sys

POISON_PROMPT = "genq-test-poison: kill the worker"
POISON_EXIT_CODE = 86


def install() -> None:
    from workers import job_runner

    build = job_runner.build_request

    def build_request(job):  # type: ignore[no-untyped-def]
        if (job.input or {}).get("prompt") == POISON_PROMPT:
            print(f"poison job {job.id}: killing this worker", flush=True)
            os._exit(POISON_EXIT_CODE)
        return build(job)

    job_runner.build_request = build_request


if __name__ == "__main__":
    install()
    from genq.cli.main import main

    sys.exit(main(sys.argv[1:]))
