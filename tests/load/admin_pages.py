"""How fast is the admin dashboard on a big database? (not a test: a measurement, PostgreSQL only)

    PYTHONPATH=. python tests/load/admin_pages.py --database-url postgresql+psycopg://… [--jobs 100000]
        [--loads 20] [--explain]

Migrates the (empty) database, seeds it in SQL: `--jobs` jobs over 7 days (the last hour busier), three
models, every status, metadata, 100 batches, three to five events per job, webhook deliveries for one job in
ten (some failing), an admin user; ANALYZE. Then serves the API (werkzeug, loopback, in this process), logs
in, and loads every dashboard page and data endpoint `--loads` times one after the other, printing the
median and the slowest per URL. `--explain` prints EXPLAIN (ANALYZE, BUFFERS) of the dashboard's heaviest
queries. The database is left as seeded (give it a throwaway one).
"""
from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from api import create_app  # noqa: E402
from api.http_server import make_api_server  # noqa: E402
from genq.settings import Settings  # noqa: E402
from genq.store import migrate  # noqa: E402
from genq.store.admin_stats import _PG_STATS  # noqa: E402
from genq.store.admin_users import AdminUsers  # noqa: E402
from genq.store.db import make_engine, make_session_factory  # noqa: E402

PASSWORD = "load test password"

SEED = """
INSERT INTO jobs (id, status, model, input, params, output_text, finish_reason, prompt_tokens, completion_tokens,
                  error_code, error_message, attempts, created_at, started_at, completed_at, updated_at, metadata,
                  worker_id, event_seq, batch_id, custom_id, batch_line, priority, max_attempts, published_at)
SELECT id, status, model, '{"prompt": "Tell me a story"}'::jsonb, '{"max_new_tokens": 64}'::jsonb,
       CASE WHEN status = 'succeeded' THEN 'Once upon a time' END,
       CASE WHEN status = 'succeeded' THEN 'eos' END,
       CASE WHEN started IS NOT NULL THEN 12 END, CASE WHEN status = 'succeeded' THEN 40 + (n % 200) END,
       CASE WHEN status = 'failed' THEN 'internal_error' WHEN status = 'expired' THEN 'expired' END,
       CASE WHEN status IN ('failed', 'expired') THEN 'seeded' END,
       CASE WHEN started IS NOT NULL THEN 1 ELSE 0 END, created, started,
       CASE WHEN status NOT IN ('queued', 'running') THEN started + (n % 30 + 1) * interval '1 second' END,
       created, jsonb_build_object('team', 'team' || (n % 10), 'run', (n % 1000)::text),
       CASE WHEN started IS NOT NULL THEN 'load-host:' || (1000 + n % 8) END,
       CASE WHEN status IN ('queued') THEN 1 WHEN status = 'running' THEN 2 ELSE 4 END,
       CASE WHEN n % 1000 < 100 THEN batch_id END, CASE WHEN n % 1000 < 100 THEN 'line-' || n END,
       CASE WHEN n % 1000 < 100 THEN n END, n % 3, 3, created
FROM (
  SELECT n, gen_random_uuid()::text AS id, 'model-' || (n % 3) AS model,
         CASE WHEN n % 100 < 80 THEN 'succeeded' WHEN n % 100 < 85 THEN 'failed' WHEN n % 100 < 90 THEN 'canceled'
              WHEN n % 100 < 92 THEN 'expired' WHEN n % 100 < 97 THEN 'queued' ELSE 'running' END AS status,
         created, CASE WHEN n % 100 < 92 AND n % 100 >= 85 AND n % 2 = 0 THEN NULL
                       WHEN n % 100 >= 92 AND n % 100 < 97 THEN NULL
                       ELSE created + (n % 5) * interval '1 second' END AS started,
         batch_id
  FROM (SELECT n,
               -- one job in five in the last hour, the rest over 7 days
               CASE WHEN n % 5 = 0 THEN now() - (n % 3600) * interval '1 second'
                    ELSE now() - interval '1 hour' - (n * 6.04) * interval '1 second' END AS created,
               (SELECT b.id FROM seeded_batches b WHERE b.k = n / 1000 % 100) AS batch_id
        FROM generate_series(1, :jobs) AS n) g
) s
"""

EVENTS = """
INSERT INTO job_events (job_id, seq, kind, data, created_at)
SELECT id, 1, 'status', '{"status": "queued"}'::jsonb, created_at FROM jobs;
INSERT INTO job_events (job_id, seq, kind, data, created_at)
SELECT id, 2, 'status', '{"status": "running", "attempt": 1}'::jsonb, started_at FROM jobs WHERE started_at IS NOT NULL;
INSERT INTO job_events (job_id, seq, kind, data, created_at)
SELECT id, 3, 'delta', '{"text": "Once upon a time"}'::jsonb, started_at FROM jobs WHERE status = 'succeeded';
INSERT INTO job_events (job_id, seq, kind, data, created_at)
SELECT id, CASE WHEN started_at IS NULL THEN 2 ELSE 4 END, 'status', jsonb_build_object('status', status),
       completed_at FROM jobs WHERE completed_at IS NOT NULL;
INSERT INTO webhook_deliveries (id, job_id, event, webhook_id, url, payload, status, attempt_count,
                                next_attempt_at, created_at, updated_at)
SELECT gen_random_uuid()::text, id, 'job.completed', 'msg_' || id, 'https://hooks.example/genq', '{}'::jsonb,
       CASE WHEN r < 90 THEN 'succeeded' WHEN r < 95 THEN 'pending' WHEN r < 99 THEN 'failed' ELSE 'gone' END,
       CASE WHEN r < 90 THEN 1 WHEN r < 95 THEN 2 ELSE 8 END,
       CASE WHEN r >= 90 AND r < 95 THEN now() + interval '5 minutes' END, completed_at, completed_at
FROM (SELECT id, completed_at, (hashtext(id) & 1023) % 100 AS r FROM jobs
      WHERE completed_at IS NOT NULL AND hashtext(id) % 10 = 0) j;
INSERT INTO webhook_attempts (delivery_id, number, started_at, outcome, status_code, error, duration_s,
                              response_excerpt)
SELECT id, 1, created_at, CASE status WHEN 'succeeded' THEN 'succeeded' WHEN 'gone' THEN 'gone' ELSE 'retry' END,
       CASE status WHEN 'succeeded' THEN 200 WHEN 'gone' THEN 410 ELSE 503 END, NULL, 0.05, ''
FROM webhook_deliveries;
"""


def seed(url: str, jobs: int) -> None:
    migrate.upgrade(url)
    engine = create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE seeded_batches (k int, id text) ON COMMIT DROP"))
        conn.execute(text("INSERT INTO seeded_batches SELECT k, gen_random_uuid()::text FROM generate_series(0, 99) k"))
        conn.execute(text("INSERT INTO batches (id, total, created_at) SELECT id, 100, now() - k * interval '1 hour' "
                          "FROM seeded_batches"))
        conn.execute(text(SEED), {"jobs": jobs})
        for statement in EVENTS.strip().split(";\n"):
            conn.execute(text(statement))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    users = make_engine(url)
    AdminUsers(make_session_factory(users)).put("load", PASSWORD, "admin")
    users.dispose()
    print(f"seeded {jobs} jobs in {time.perf_counter() - started:.1f}s", flush=True)


def urls(session: requests.Session, base: str, url: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        job = conn.execute(text("SELECT id FROM jobs WHERE status = 'succeeded' "
                                "ORDER BY created_at DESC LIMIT 1")).scalar()
        queued = conn.execute(text("SELECT id FROM jobs WHERE status = 'queued' "
                                   "ORDER BY created_at LIMIT 1")).scalar()
        batch = conn.execute(text("SELECT id FROM batches LIMIT 1")).scalar()
        worker = conn.execute(text("SELECT worker_id FROM jobs WHERE worker_id IS NOT NULL LIMIT 1")).scalar()
    engine.dispose()
    first = session.get(f"{base}/admin/jobs").text
    cursor = re.search(r'rel="next" href="([^"]+)"', first)
    page2 = cursor.group(1).replace("&amp;", "&") if cursor else "/admin/jobs"
    return [
        "/admin/", "/admin/data/overview.json", "/metrics",
        "/admin/jobs", page2, "/admin/jobs?status=failed", "/admin/jobs?status=queued&model=model-1",
        "/admin/jobs?model=model-2", "/admin/jobs?metadata=team%3Dteam3", "/admin/jobs?metadata=run%3D999",
        "/admin/jobs?range=1h&status=succeeded", "/admin/jobs?created_before=2026-01-01T00:00",
        f"/admin/jobs?id={job}", f"/admin/jobs/{job}", f"/admin/jobs/{queued}",
        "/admin/workers", f"/admin/workers/{worker}", "/admin/batches", f"/admin/batches/{batch}",
        "/admin/webhooks", "/admin/webhooks?kind=failed", "/admin/webhooks?kind=gone", "/admin/audit",
        "/admin/actions/bulk_cancel?status=queued&model=model-0",
    ]


EXPLAINS = {
    "hour stats (genq.store.admin_stats: per minute and the hour, percentiles)":
        _PG_STATS.text.replace(":since", "now() - interval '1 hour'"),
    "jobs by status (job_counts)": "SELECT model, status, sum(n) FROM job_counts GROUP BY model, status",
    "oldest queued of a model": "SELECT min(created_at) FROM jobs WHERE model = 'model-1' AND status = 'queued'",
    "job list, metadata filter": ("SELECT id FROM jobs WHERE metadata @> '{\"run\": \"999\"}'::jsonb "
                                  "ORDER BY created_at DESC, id DESC LIMIT 51"),
    "job list, model filter": "SELECT id FROM jobs WHERE model = 'model-2' ORDER BY created_at DESC, id DESC LIMIT 51",
    "queue position of a queued job": (
        "SELECT id, ahead FROM (SELECT id, row_number() OVER (PARTITION BY model ORDER BY priority DESC, "
        "created_at, id) - 1 AS ahead FROM jobs WHERE status = 'queued' AND model = 'model-0') r WHERE id = "
        "(SELECT id FROM jobs WHERE status = 'queued' AND model = 'model-0' ORDER BY created_at DESC LIMIT 1)"),
    "bulk selection count (at most 1000)": ("SELECT count(*) FROM (SELECT id FROM jobs WHERE status = 'queued' "
                                            "AND model = 'model-0' LIMIT 1000) s"),
    "batches page counts": ("SELECT batch_id, status, count(*), max(completed_at) FROM jobs WHERE batch_id IN "
                            "(SELECT id FROM batches ORDER BY created_at DESC, id DESC LIMIT 50) "
                            "GROUP BY batch_id, status"),
    "failing webhooks": ("SELECT id FROM webhook_deliveries WHERE status = 'pending' AND attempt_count > 0 "
                         "ORDER BY updated_at DESC LIMIT 50"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="an empty PostgreSQL database (it is filled)")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--no-seed", action="store_true", help="measure an already seeded database")
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    if not args.no_seed:
        seed(args.database_url, args.jobs)
    with tempfile.TemporaryDirectory(prefix="genq-admin-load-") as tmp:
        settings = Settings.from_env({"DATABASE_URL": args.database_url, "GENQ_BROKER_URL": f"filesystem://{tmp}"})
        server = make_api_server("127.0.0.1", 0, create_app(settings))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        session = requests.Session()
        login = session.get(f"{base}/admin/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)  # type: ignore[union-attr]
        session.post(f"{base}/admin/login", data={"username": "load", "password": PASSWORD, "csrf_token": token})
        print(f"{'url':<62} {'median ms':>9} {'max ms':>8} {'status':>6}")
        for path in urls(session, base, args.database_url):
            session.get(base + path)  # warm: templates compiled, connections pooled
            times, status = [], 0
            for _ in range(args.loads):
                t = time.perf_counter()
                response = session.get(base + path)
                times.append((time.perf_counter() - t) * 1000)
                status = response.status_code
            shown = path if len(path) <= 60 else path[:57] + "..."
            print(f"{shown:<62} {statistics.median(times):9.1f} {max(times):8.1f} {status:>6}", flush=True)
        server.shutdown()
    if args.explain:
        engine = create_engine(args.database_url)
        with engine.connect() as conn:
            for name, sql in EXPLAINS.items():
                plan = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)).scalars().all()
                print(f"\n-- {name}\n" + "\n".join(plan))
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
