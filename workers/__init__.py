"""The Celery workers: the app (`celery_app`), what a worker process holds (`context`), the thin tasks
(`job_tasks`, `webhook_tasks`), running one job (`job_runner`), the engine host and the lease keeper, the
worker registry's heartbeat (`heartbeat`) and the worker's metrics endpoint (`metrics`). They
import `genq` and `models`, never `api`.
"""
