"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright, against the API over
HTTP, PostgreSQL and a `genq worker` serving the tiny model (file-system broker). Logging in, cancelling a
running job by clicking, pausing a queue and seeing new jobs wait, a viewer who can act on nothing, and
every page at desktop and phone width without the page itself scrolling sideways.

Screenshots go to $GENQ_ADMIN_SCREENSHOTS if set (to look at them), else to the test's temporary folder.
Needs `apt-get install chromium` and the playwright package (the test extra); skipped without them.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e_helpers import ApiThread, Child, free_port, wait_until
from tiny_model import TINY_MODEL, long_job, tiny_gguf  # noqa: F401  (fixture)

from api import create_app
from api.services import EXTENSION_KEY
from genq.settings import Settings
from genq.store import migrate
from genq.store.admin_users import AdminUsers

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"no {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

ADMIN, VIEWER, PASSWORD = "alice", "victor", "correct horse battery"
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}


class Site:
    def __init__(self, database_url: str, model: Path, tmp: Path):
        self.env = {
            "DATABASE_URL": database_url, "GENQ_BROKER_URL": f"filesystem://{tmp / 'broker'}",
            "GENQ_MODELS": f"{TINY_MODEL}={model}", "GENQ_BATCH_SIZE": "4", "GENQ_LEASE_SECONDS": "2",
            "GENQ_SWEEP_INTERVAL": "1", "GENQ_REPUBLISH_AFTER": "600", "GENQ_JOB_TIMEOUT": "120",
            "GENQ_BROKER_VISIBILITY_TIMEOUT": "300", "GENQ_ADMIN_USER": ADMIN, "GENQ_ADMIN_PASSWORD": PASSWORD,
            "GENQ_WORKER_METRICS_PORT": str(free_port()),
        }
        migrate.upgrade(database_url)
        self.app = create_app(Settings.from_env(self.env))
        AdminUsers(self.app.extensions[EXTENSION_KEY].sessions).put(VIEWER, PASSWORD, "viewer")
        self.api = ApiThread(self.app)
        self.url = self.api.url
        self.worker = Child(["worker", "--models", TINY_MODEL, "--queues", "models"], self.env, cwd=tmp)
        self.worker.wait_for_line("ready in", 180)

    def post(self, body: dict[str, Any]) -> str:
        response = requests.post(f"{self.url}/v1/jobs", json=body, timeout=30)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return requests.get(f"{self.url}/v1/jobs/{job_id}", timeout=10).json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.worker.stop()
        self.api.stop()
        self.app.extensions[EXTENSION_KEY].db.dispose()


@pytest.fixture(scope="module")
def site(postgres_database: Callable[[], str], tiny_gguf: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(postgres_database(), tiny_gguf, tmp_path_factory.mktemp("admin-site"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("GENQ_ADMIN_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _login(browser: Any, site: Site, username: str, viewport: dict[str, int] = DESKTOP) -> Any:
    page = browser.new_context(viewport=viewport).new_page()
    page.goto(f"{site.url}/admin/")
    assert "/admin/login" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    return page


def _status(page: Any) -> str:
    return str(page.inner_text("#job-status")).strip()


def test_logging_in_shows_the_overview_which_refreshes_itself(browser: Any, site: Site) -> None:
    page = browser.new_context(viewport=DESKTOP).new_page()
    page.goto(f"{site.url}/admin/login")
    page.fill("input[name=username]", ADMIN)
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "Wrong user name or password" in page.inner_text("main")
    page = _login(browser, site, ADMIN)
    assert page.is_visible(f'tr[data-queue="{TINY_MODEL}"]')
    # the live part: the script redraws the charts and the clock from the data endpoint
    # (polled from here: the page's Content-Security-Policy refuses Playwright's evaluated predicates)
    wait_until(lambda: page.locator("[data-chart] svg").count() == 4, 10, "the charts were not drawn")
    first = page.inner_text('[data-live="now"]')
    assert first.endswith("UTC")  # written by the script, not the server
    wait_until(lambda: page.inner_text('[data-live="now"]') != first, 15, "the overview did not refresh")


def test_clicking_cancel_on_a_running_job_cancels_it(browser: Any, site: Site) -> None:
    job_id = site.post(long_job())
    wait_until(lambda: site.job(job_id)["status"] == "running", 60, "the job did not start", interval=0.05)
    page = _login(browser, site, ADMIN)
    page.goto(f"{site.url}/admin/jobs/{job_id}")
    assert _status(page) == "running"
    page.click('a[data-action="cancel"]')
    assert "Cancel job?" in page.inner_text("h1")
    page.click("#confirm")
    page.wait_for_url(re.compile(rf"/admin/jobs/{job_id}\?notice="))
    deadline = time.monotonic() + 15
    while _status(page) != "canceled" and time.monotonic() < deadline:
        time.sleep(0.3)
        page.reload()
    assert _status(page) == "canceled"
    assert site.job(job_id)["status"] == "canceled"
    page.goto(f"{site.url}/admin/audit")
    assert job_id in page.inner_text("table")


def test_pausing_a_queue_makes_new_jobs_wait_until_it_is_resumed(browser: Any, site: Site) -> None:
    page = _login(browser, site, ADMIN)
    page.click(f'tr[data-queue="{TINY_MODEL}"] a[data-action="pause"]')
    page.click("#confirm")
    page.wait_for_selector(f'tr[data-queue="{TINY_MODEL}"] .st-paused')
    job_id = site.post({"model": TINY_MODEL, "prompt": "hi", "params": {"max_new_tokens": 4}})
    time.sleep(3)  # a worker would have started it by now
    job = site.job(job_id)
    assert job["status"] == "queued" and job["queue_paused"] is True
    page.goto(f"{site.url}/admin/jobs/{job_id}")
    assert "queue paused" in page.inner_text("main")
    page.goto(f"{site.url}/admin/")
    page.click(f'tr[data-queue="{TINY_MODEL}"] a[data-action="resume"]')
    page.click("#confirm")
    wait_until(lambda: site.job(job_id)["status"] == "succeeded", 60, "the job did not run after resume")


def test_a_viewer_sees_the_pages_but_no_action_and_is_refused_one(browser: Any, site: Site) -> None:
    job_id = site.post(long_job(params={"max_new_tokens": 8}))
    page = _login(browser, site, VIEWER)
    for path in ("/admin/", f"/admin/jobs/{job_id}", "/admin/jobs"):
        page.goto(site.url + path)
        assert page.locator("[data-action]").count() == 0, path
    page.goto(f"{site.url}/admin/actions/cancel?job={job_id}")
    assert "You are a viewer" in page.inner_text("main") and page.locator("#confirm").count() == 0
    token = page.get_attribute("input[name=csrf_token]", "value")
    refused = page.request.post(f"{site.url}/admin/actions/cancel", form={"job": job_id, "csrf_token": token})
    assert refused.status == 403
    assert site.job(job_id)["status"] != "canceled"


def test_the_worker_registers_beats_and_serves_its_own_metrics(site: Site) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from genq.store.worker_registry import list_workers

    [worker] = wait_until(lambda: list_workers(site.app.extensions[EXTENSION_KEY].sessions), 30, "no worker")
    assert worker.state == "up" and worker.row.models == [TINY_MODEL] and worker.row.batch_limit == 4
    job_id = site.post({"model": TINY_MODEL, "prompt": "hi", "params": {"max_new_tokens": 4}})
    wait_until(lambda: site.job(job_id)["status"] == "succeeded", 60, "the job did not finish")
    url = f"http://127.0.0.1:{site.env['GENQ_WORKER_METRICS_PORT']}/metrics"

    def samples() -> dict[tuple[str, str], float]:
        text = requests.get(url, timeout=10).text
        return {(s.name, s.labels.get("status", "")): s.value for f in text_string_to_metric_families(text)
                for s in f.samples if s.labels.get("model") == TINY_MODEL}

    found = wait_until(lambda: (s := samples()).get(("genq_jobs_finished_total", "succeeded")) and s, 15,
                       "the worker's metrics did not count the job")
    assert found[("genq_engine_steps_total", "")] > 0 and found[("genq_engine_slots", "")] == 4
    assert found[("genq_generated_tokens_total", "")] >= 4


PAGES = ["/admin/", "/admin/jobs", "/admin/workers", "/admin/batches", "/admin/webhooks", "/admin/audit"]


@pytest.mark.parametrize("name, viewport", [("desktop", DESKTOP), ("phone", PHONE)])
def test_every_page_fits_its_screen(browser: Any, site: Site, shots: Path, name: str,
                                    viewport: dict[str, int]) -> None:
    job_id = site.post({"model": TINY_MODEL, "prompt": "hi", "params": {"max_new_tokens": 4},
                        "metadata": {"team": "search"}})
    wait_until(lambda: site.job(job_id)["status"] == "succeeded", 60, "the job did not finish")
    page = _login(browser, site, ADMIN, viewport)
    workers = page.context.request.get(f"{site.url}/admin/workers").text()
    worker_href = re.search(r'href="(/admin/workers/[^"]+)"', workers)
    extra = [f"/admin/jobs/{job_id}", f"/admin/actions/cancel?job={job_id}"]
    if worker_href:
        extra.append(worker_href.group(1))
    for path in PAGES + extra:
        page.goto(site.url + path)
        page.wait_for_load_state("networkidle")
        slug = re.sub(r"[^a-z0-9]+", "-", path.split("?")[0].lower()).strip("-") or "overview"
        page.screenshot(path=str(shots / f"{name}-{slug}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at {viewport['width']}px"
    page.goto(f"{site.url}/admin/login")
    page.screenshot(path=str(shots / f"{name}-login.png"))
