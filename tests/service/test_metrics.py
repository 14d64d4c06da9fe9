"""GET /metrics: Prometheus text with the service's state from the database and the API's requests, summed
over API processes in multiprocess mode."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from admin_fixtures import ADMIN, Dashboard, dashboard, new_job, with_users  # noqa: F401  (fixtures)
from prometheus_client.parser import text_string_to_metric_families

from genq.store import queues

ROOT = Path(__file__).resolve().parents[2]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_show_jobs_by_status_and_each_queue_from_the_database(dashboard: Dashboard) -> None:
    model = dashboard.settings.default_model
    ids = [new_job(dashboard) for _ in range(3)]
    dashboard.store.cancel(ids[0])
    queues.pause(dashboard.store.sessions, model, ADMIN)
    response = dashboard.client().get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain; version=0.0.4")
    samples = _samples(response.text)
    assert samples[("genq_jobs", (("model", model), ("status", "queued")))] == 2
    assert samples[("genq_jobs", (("model", model), ("status", "canceled")))] == 1
    assert samples[("genq_queue_depth", (("model", model),))] == 2
    assert samples[("genq_queue_oldest_age_seconds", (("model", model),))] > 0
    assert samples[("genq_queue_paused", (("model", model),))] == 1
    assert samples[("genq_webhook_deliveries", (("status", "pending"),))] == 0


def test_http_requests_are_counted_by_route_template_and_status(dashboard: Dashboard) -> None:
    client = dashboard.client()
    before = _samples(client.get("/metrics").text)
    key = ("genq_http_requests_total", (("method", "GET"), ("route", "/v1/jobs/<job_id>"), ("status", "404")))
    for i in range(3):
        client.get(f"/v1/jobs/00000000-0000-4000-8000-00000000000{i}")
    after = _samples(client.get("/metrics").text)
    assert after[key] - before.get(key, 0) == 3


_REQUESTS = """
import sys
from genq.settings import Settings
from api import create_app
app = create_app(Settings.from_env({"DATABASE_URL": sys.argv[1], "GENQ_BROKER_URL": "filesystem://" + sys.argv[2]}))
client = app.test_client()
for _ in range(int(sys.argv[3])):
    client.get("/v1/models")
if sys.argv[4] == "scrape":
    print(client.get("/metrics").text)
"""


def test_several_api_processes_add_up_in_multiprocess_mode(dashboard: Dashboard, tmp_path: Path) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    args = [dashboard.settings.database_url, str(tmp_path / "broker")]
    for n in (2, 3):  # two API processes that served requests and are gone
        subprocess.run([sys.executable, "-c", _REQUESTS, *args, str(n), "-"], env=env, check=True, cwd=ROOT,
                       timeout=120)
    scraped = subprocess.run([sys.executable, "-c", _REQUESTS, *args, "1", "scrape"], env=env, check=True,
                             cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    key = ("genq_http_requests_total", (("method", "GET"), ("route", "/v1/models"), ("status", "200")))
    assert _samples(scraped)[key] == 6


def test_every_series_the_grafana_dashboard_plots_is_one_the_service_exports() -> None:
    import json
    import re

    dashboard_json = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard_json["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\bgenq_[a-z_]+", e)}
    source = (ROOT / "api" / "metrics.py").read_text() + (ROOT / "workers" / "metrics.py").read_text()
    missing = []
    for name in sorted(names):
        base = re.sub(r"_(bucket|total|count|sum)$", "", name)
        if f'"{name}"' not in source and f'"{base}"' not in source:
            missing.append(name)
    assert names and missing == []
