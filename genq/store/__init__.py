"""The persistence layer: the database engine and sessions (`db`), the schema of every table (`schema`), the
job state machine (`jobs`, whose transitions also write `transition_effects`), the per-job event log
(`job_events`, `delta_sink`), listing and queue positions (`listing`), leases and cancel requests (`leases`),
idempotency keys, batches (and the OpenAI Batch API's files and batch records: `openai_files`,
`openai_batches`), what a database error means and how an outage is ridden out (`db_errors`,
`db_retry`), when a worker counts as lost (`lost_leases`), the migrations runner (`migrate`), and the admin
dashboard's tables (`job_counts`, `queues`, `worker_registry`, `admin_users`, `audit`, `admin_stats`,
`admin_lists`). It imports
only genq's vocabulary (`genq.ids`, `genq.status`, `genq.lifecycle`) and, to find its scripts, the
`migrations` package; the one link upward is that a status change creates the webhook outbox rows it fires in
its own transaction (`transition_effects` -> `genq.webhooks.outbox`). tests/test_layers.py checks this.
"""
