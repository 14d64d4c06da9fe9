"""Fault tests and the total-queue fault run: real API, worker and webhook-worker processes on a private
PostgreSQL and a private Redis, faults injected, then a checker over the database and the webhooks received.
`python -m tests.faults.run --jobs 300` runs the long fault run (tests/faults/run.py)."""
