"""The `genq` command line (`main`: db, api, worker, up, sweep, check, bench), the `genq up` process supervisor
and the through-the-service benchmark. It stands apart from the core it drives: it is the one part of genq
that imports `api` and `workers` (to start them), and nothing else in genq imports it.
"""
