"""The dashboard over HTTP: who may see and do what, CSRF, sessions, the actions and their audit records."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from admin_fixtures import (  # noqa: F401  (fixtures)
    ADMIN,
    PASSWORD,
    VIEWER,
    Dashboard,
    csrf,
    dashboard,
    make_dashboard,
    new_job,
    with_users,
)

from genq.store import audit
from genq.store.api_keys import ApiKeyStore

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["/admin/", "/admin/jobs", "/admin/workers", "/admin/batches", "/admin/webhooks", "/admin/audit"]


def test_without_any_user_every_page_says_how_to_create_one_and_shows_nothing_else(dashboard: Dashboard) -> None:
    new_job(dashboard)
    for path in [*PAGES, "/admin/login", "/admin/data/overview.json"]:
        page = dashboard.client().get(path)
        assert page.status_code == 503 and "genq admin add-user" in page.text and "GENQ_ADMIN_USER" in page.text
        assert "queued" not in page.text


def test_pages_need_a_login_and_the_login_form_has_its_fields(with_users: Dashboard) -> None:
    client = with_users.client()
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login")
    assert client.get("/admin/data/overview.json").status_code == 401
    form = client.get("/admin/login").text
    for field in ('name="username"', 'name="password"', 'type="hidden" name="csrf_token"'):
        assert field in form


def test_login_sets_an_httponly_samesite_session_cookie(with_users: Dashboard) -> None:
    client = with_users.client()
    token = csrf(client.get("/admin/login").text)
    response = client.post("/admin/login", data={"username": ADMIN, "password": PASSWORD, "csrf_token": token})
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("genq_admin="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    for path in PAGES:
        assert client.get(path).status_code == 200, path


def test_a_login_without_the_forms_csrf_token_is_refused(with_users: Dashboard) -> None:
    client = with_users.client()
    client.get("/admin/login")
    response = client.post("/admin/login", data={"username": ADMIN, "password": PASSWORD, "csrf_token": "forged"})
    assert response.status_code == 403 and client.get("/admin/").status_code == 302


def test_repeated_failed_logins_are_slowed_down(with_users: Dashboard) -> None:
    client = with_users.client()
    token = csrf(client.get("/admin/login").text)
    statuses = [client.post("/admin/login", data={"username": ADMIN, "password": "wrong password",
                                                  "csrf_token": token}).status_code for _ in range(4)]
    assert statuses[:3] == [401, 401, 401] and statuses[3] == 429
    right = client.post("/admin/login", data={"username": ADMIN, "password": PASSWORD, "csrf_token": token})
    assert right.status_code == 429  # locked: even the right password waits


def test_every_post_needs_the_sessions_csrf_token(with_users: Dashboard) -> None:
    job_id = new_job(with_users)
    client = with_users.logged_in()
    for token in (None, "forged"):
        data = {"job": job_id, **({"csrf_token": token} if token else {})}
        assert client.post("/admin/actions/cancel", data=data).status_code == 403
    assert with_users.store.get(job_id).status == "queued"
    assert client.post("/admin/logout", data={}).status_code == 403  # logging out is a POST too


def test_cancel_asks_for_confirmation_then_cancels_and_is_audited(with_users: Dashboard) -> None:
    job_id = new_job(with_users)
    client = with_users.logged_in()
    confirm = client.get(f"/admin/actions/cancel?job={job_id}&next=/admin/jobs/{job_id}")
    assert confirm.status_code == 200 and job_id in confirm.text
    assert with_users.store.get(job_id).status == "queued"  # showing the confirmation changes nothing
    done = client.post("/admin/actions/cancel", data={"job": job_id, "csrf_token": csrf(confirm.text),
                                                      "next": f"/admin/jobs/{job_id}"},
                       environ_base={"REMOTE_ADDR": "127.0.0.9"})
    assert done.status_code == 302 and done.headers["Location"].startswith(f"/admin/jobs/{job_id}")
    assert with_users.store.get(job_id).status == "canceled"
    [record] = audit.page(with_users.store.sessions, 10)
    assert (record.username, record.action, record.target, record.address) == (ADMIN, "cancel", job_id, "127.0.0.9")
    assert job_id in client.get("/admin/audit").text


def test_retry_requeues_a_canceled_job_from_the_dashboard(with_users: Dashboard) -> None:
    job_id = new_job(with_users)
    with_users.store.cancel(job_id)
    client = with_users.logged_in()
    page = client.get(f"/admin/jobs/{job_id}")
    assert 'data-action="retry"' in page.text
    client.post("/admin/actions/retry", data={"job": job_id, "csrf_token": csrf(page.text)})
    assert with_users.store.get(job_id).status == "queued"
    assert [r.action for r in audit.page(with_users.store.sessions, 10)] == ["retry"]


def test_a_viewer_sees_every_page_but_no_action_and_cannot_act(with_users: Dashboard) -> None:
    job_id = new_job(with_users)
    client = with_users.logged_in(VIEWER)
    for path in [*PAGES, f"/admin/jobs/{job_id}"]:
        page = client.get(path)
        assert page.status_code == 200 and "data-action" not in page.text, path
    token = csrf(client.get("/admin/").text)  # the logout form's: a valid token of the viewer's session
    for name, data in [("cancel", {"job": job_id}), ("pause", {"model": with_users.settings.default_model}),
                       ("bulk_cancel", {"status": "queued"})]:
        assert client.post(f"/admin/actions/{name}", data={**data, "csrf_token": token}).status_code == 403
    assert with_users.store.get(job_id).status == "queued"
    assert audit.page(with_users.store.sessions, 10) == []


def test_pausing_a_queue_keeps_accepting_jobs_and_says_so_on_the_job(with_users: Dashboard) -> None:
    model = with_users.settings.default_model
    client = with_users.logged_in()
    token = csrf(client.get("/admin/").text)
    client.post("/admin/actions/pause", data={"model": model, "csrf_token": token})
    created = client.post("/v1/jobs", json={"prompt": "hi"})
    assert created.status_code == 202 and created.json["queue_paused"] is True
    assert "queue paused" in client.get(f"/admin/jobs/{created.json['id']}").text
    client.post("/admin/actions/resume", data={"model": model, "csrf_token": token})
    assert client.get(f"/v1/jobs/{created.json['id']}").json["queue_paused"] is False


def test_bulk_cancel_applies_to_the_filtered_selection_only(with_users: Dashboard) -> None:
    tagged = [new_job(with_users, metadata={"run": "bulk"}) for _ in range(3)]
    other = new_job(with_users, metadata={"run": "keep"})
    client = with_users.logged_in()
    confirm = client.get("/admin/actions/bulk_cancel?metadata=run%3Dbulk")
    assert "3 matching jobs" in confirm.text
    client.post("/admin/actions/bulk_cancel", data={"metadata": "run=bulk", "csrf_token": csrf(confirm.text)})
    assert {with_users.store.get(j).status for j in tagged} == {"canceled"}
    assert with_users.store.get(other).status == "queued"


def test_the_job_list_filters_by_status_model_metadata_and_pages_by_cursor(with_users: Dashboard) -> None:
    ids = [new_job(with_users, metadata={"k": "v"}) for _ in range(55)]
    client = with_users.logged_in()
    first = client.get("/admin/jobs?status=queued&metadata=k%3Dv").text
    assert sum(i[:8] in first for i in ids) == 50 and 'rel="next"' in first
    next_href = first.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    second = client.get(next_href).text
    assert sum(i[:8] in second for i in ids) == 5 and 'rel="next"' not in second
    assert sum(i[:8] in client.get("/admin/jobs?status=running").text for i in ids) == 0
    bad = client.get("/admin/jobs?created_after=yesterday")
    assert bad.status_code == 200 and "a date and time" in bad.text  # shown by the field, not a 500
    assert client.get(f"/admin/jobs?id={ids[0]}").headers["Location"] == f"/admin/jobs/{ids[0]}"


def test_the_job_list_filters_by_the_api_key_that_submitted_the_jobs(with_users: Dashboard) -> None:
    keys = ApiKeyStore(with_users.store.sessions)
    team_a, _ = keys.create("team-a")
    team_b, _ = keys.create("team-b")
    of_a = [new_job(with_users, owner=team_a.id) for _ in range(2)]
    of_b = new_job(with_users, owner=team_b.id)
    anonymous = new_job(with_users)
    client = with_users.logged_in()
    listed = client.get("/admin/jobs?key=team-a").text
    assert all(j[:8] in listed for j in of_a) and of_b[:8] not in listed and anonymous[:8] not in listed
    assert of_a[0][:8] not in client.get("/admin/jobs?key=no-such-key").text
    assert team_a.id in client.get(f"/admin/jobs/{of_a[0]}").text  # the job's page names its key


def test_genq_admin_user_and_password_create_an_admin_at_start(dashboard: Dashboard, tmp_path: Path) -> None:
    url = dashboard.settings.database_url
    started = make_dashboard(url, tmp_path, GENQ_ADMIN_USER="root", GENQ_ADMIN_PASSWORD=PASSWORD)
    assert started.users.login("root", PASSWORD).principal.role == "admin"


def test_genq_admin_add_user_reads_the_password_from_stdin(dashboard: Dashboard) -> None:
    env = {"DATABASE_URL": dashboard.settings.database_url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "genq", "admin", "add-user", "vera", "--role", "viewer"],
                          input=PASSWORD + "\n", capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert dashboard.users.login("vera", PASSWORD).principal.role == "viewer"
    short = subprocess.run([sys.executable, "-m", "genq", "admin", "add-user", "vera"], input="short\n",
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert short.returncode == 2 and "password" in short.stderr
