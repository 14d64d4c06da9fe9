"""The `genq` command line: db upgrade, api, worker, up, sweep, check, bench, keys (genq/cli/keys.py),
admin (genq/cli/admin.py); and the client of a running service (submit, jobs, batch:
genq/cli/client_commands.py)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from genq.cli.client_commands import add_client_commands
from genq.settings import ConfigError, Settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `genq` console script and `python -m genq`; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("GENQ_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"genq: configuration error: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genq", description="Asynchronous LLM generation job queue.")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema (Alembic migrations)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply every migration (creates the SQLite file if needed)").set_defaults(
        func=_db_upgrade
    )
    db_sub.add_parser("current", help="print the database's revision").set_defaults(func=_db_current)

    api = sub.add_parser("api", help="serve the REST API")
    api.add_argument("--host", help="bind address (GENQ_HOST, default 127.0.0.1)")
    api.add_argument("--port", type=int, help="port (GENQ_PORT, default 8000)")
    api.add_argument("--server", choices=("gunicorn", "werkzeug"), default="gunicorn",
                     help="gunicorn (default: GENQ_API_WORKERS processes x GENQ_API_THREADS threads) or werkzeug's "
                          "threaded server (one process; what genq up runs)")
    api.set_defaults(func=_api)

    worker = sub.add_parser("worker", help="run a Celery worker with the model engine")
    worker.add_argument("--models", help="comma-separated models to serve (default: all configured)")
    worker.add_argument(
        "--queues", default="models,webhooks",
        help="what to consume: 'models' (generation jobs), 'webhooks' (webhook deliveries and their sweep), "
             "or both (the default)",
    )
    worker.add_argument(
        "--concurrency", type=int,
        help="task threads (default: GENQ_BATCH_SIZE for models, plus GENQ_WEBHOOK_CONCURRENCY for webhooks)",
    )
    worker.add_argument("--no-preload", action="store_true", help="load models on their first job, not at start")
    worker.add_argument("--ready-file", help="write this JSON file once the models are loaded (genq up waits for it)")
    worker.set_defaults(func=_worker)

    up = sub.add_parser("up", help="migrate, then run the API and one worker until interrupted")
    up.add_argument("--host", help="API bind address (GENQ_HOST)")
    up.add_argument("--port", type=int, help="API port (GENQ_PORT, default 8000)")
    up.set_defaults(func=_up)

    sweep = sub.add_parser(
        "sweep", help="expire jobs past their TTL, recover jobs of lost workers, re-publish lost messages "
                      "(workers do this on their own; this runs it once, or every --every seconds)")
    sweep.add_argument("--every", type=float, help="sweep again every this many seconds, until interrupted")
    sweep.set_defaults(func=_sweep)

    check = sub.add_parser("check", help="exit 0 if the database (migrated to head) and the broker answer "
                                         "(container healthcheck)")
    check.set_defaults(func=_check)

    bench = sub.add_parser("bench", help="measure the engine alone, or the whole service with --through-service")
    bench.add_argument("--workload", required=True, help="JSONL workload (the shared bench kit's workload.py)")
    bench.add_argument("--through-service", action="store_true",
                       help="send the workload through the API, database, broker and a worker")
    bench.add_argument("--url", default=None, help="with --through-service: a running service (default: start one)")
    bench.add_argument("--model", default=None, help="served model name (service) or .gguf/HF dir (engine)")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="engine options passed on to models.engine.bench")
    bench.set_defaults(func=_bench)

    from genq.cli import keys

    keys.register(sub)
    from genq.cli import admin

    admin.add_parser(sub)  # genq admin add-user (genq/cli/admin.py)
    add_client_commands(sub)
    return parser


def _db_upgrade(args: argparse.Namespace) -> int:
    from genq.store import migrate

    settings = Settings.from_env()
    migrate.upgrade(settings.database_url)
    print(f"database at revision {migrate.current_revision(settings.database_url)}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from genq.store import migrate

    print(migrate.current_revision(Settings.from_env().database_url) or "none")
    return 0


def _api(args: argparse.Namespace) -> int:
    import dataclasses

    from genq.cli.api_server import serve_gunicorn, serve_werkzeug

    settings = Settings.from_env()
    host, port = args.host or settings.host, args.port if args.port is not None else settings.port
    settings = dataclasses.replace(settings, host=host, port=port)  # the bind address decides GENQ_AUTH's default
    serve = serve_gunicorn if args.server == "gunicorn" else serve_werkzeug
    return serve(settings, host, port)


def _worker(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    names = [n.strip() for n in args.models.split(",")] if args.models else sorted(settings.models)
    unknown = [n for n in names if n not in settings.models]
    if unknown:
        raise ConfigError("--models", f"not configured: {', '.join(unknown)}; configured: {', '.join(settings.models)}")
    kinds = {k.strip() for k in args.queues.split(",") if k.strip()}
    if not kinds or kinds - {"models", "webhooks"}:
        raise ConfigError("--queues", f"{args.queues!r}: give models, webhooks or models,webhooks")
    serve_models, serve_webhooks = "models" in kinds, "webhooks" in kinds
    concurrency = args.concurrency or (
        (settings.batch_size if serve_models else 0) + (settings.webhook_concurrency if serve_webhooks else 0)
    )

    from genq.broker import queue_name
    from genq.webhooks.dispatch import WEBHOOK_QUEUE
    from workers.celery_app import app  # imported here: only worker processes pay for Celery's worker machinery

    app.genq_preload = names if serve_models and not args.no_preload else []
    app.genq_models = names if serve_models else []  # what the worker registry shows (workers/heartbeat.py)
    app.genq_sweep = serve_webhooks
    app.genq_ready_file = args.ready_file
    model_queues = [queue_name(n) for n in names] if serve_models else []
    queues = ",".join(model_queues + ([WEBHOOK_QUEUE] if serve_webhooks else []))
    app.worker_main([
        "worker",
        "--pool=threads",  # every task thread feeds the one engine loop of this process
        f"--concurrency={concurrency}",
        f"--queues={queues}",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--hostname=genq-{os.getpid()}@%h",
    ])
    return 0


def _sweep(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import time

    from genq.broker import Publisher, make_celery
    from genq.store.db import make_engine, make_session_factory
    from genq.store.jobs import JobStore
    from genq.sweeper import JobSweeper, confirm_lost_after, sweep

    settings = Settings.from_env()
    if args.every is not None and args.every <= 0:
        raise ConfigError("--every", "must be a positive number of seconds")
    engine = make_engine(settings.database_url)
    store, publisher = JobStore(make_session_factory(engine)), Publisher(make_celery(settings, main="genq-sweep"))
    try:
        if args.every is None:  # once: every expired lease counts as a lost worker
            report = sweep(store, publisher, settings.republish_after)
            print(json.dumps(dataclasses.asdict(report)), flush=True)
            return 0
        # as a worker's sweeper does: leases seen to stay expired, and a database outage waited out
        sweeper = JobSweeper(store, publisher, args.every, settings.republish_after,
                          confirm_lost_after(settings.lease_seconds))
        while True:
            found = sweeper.sweep_once()
            if found is not None:
                print(json.dumps(dataclasses.asdict(found)), flush=True)
            time.sleep(args.every)
    except KeyboardInterrupt:
        return 0
    finally:
        engine.dispose()


def _check(args: argparse.Namespace) -> int:
    from genq.broker import make_celery
    from genq.health import check_broker, check_database
    from genq.store.db import make_engine

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    try:
        checks = [*check_database(engine), check_broker(make_celery(settings))]
    except Exception as e:  # any failure is the answer: report it and exit non-zero
        print(f"genq check: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    failed = [c for c in checks if not c.ok]
    for c in failed:
        print(f"genq check: {c.name}: {c.detail}", file=sys.stderr)
    if failed:
        return 1
    print("genq check: the database (migrated) and the broker are reachable")
    return 0


def _up(args: argparse.Namespace) -> int:
    from genq.cli.supervisor import run_up

    return run_up(host=args.host, port=args.port)


def _bench(args: argparse.Namespace) -> int:
    if args.through_service:
        from genq.cli.bench_service import main as service_bench

        return service_bench(args.workload, url=args.url, model=args.model)
    from models.engine import bench

    rest = [a for a in args.rest if a != "--"]
    rest += ["--workload", args.workload] + (["--model", args.model] if args.model else [])
    return int(bench.main(rest) or 0)
