"""genq's service core, shared by the API and the workers.

Owns the vocabulary (`ids`, `status`, `lifecycle`), the settings, the broker side (`broker`), the served
models' catalog and what each can take (`model_limits`), the job object (`serialize`), the one write path
(`submit`), the job sweeper, the dependency checks (`health`) and a worker's readiness file, with the
persistence layer in `genq.store`, everything about webhooks in `genq.webhooks` and the command line and
process supervisor in `genq.cli`. It may import `models` (generation parameters, the engine's workload
format) and nothing from `api` or `workers`; only `genq.cli`, which wires the processes, imports those.
"""
