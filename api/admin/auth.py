"""Who is using the dashboard: login form, session cookie, CSRF tokens, roles.

- The session cookie holds a random token (HttpOnly, SameSite=Strict, path /admin, Secure over HTTPS); the
  database keeps its hash and the session's CSRF token (genq/store/admin_users.py), so every API process
  knows every session.
- Every POST carries `csrf_token`: the session's, or, on the login form, the one in a pre-login cookie
  (double submit). A POST without the right one is 403 and changes nothing.
- A viewer sees every page; only an admin may act (`require_admin`).
- With no dashboard user at all, every page says how to create one and shows nothing else.
"""
from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Response, abort, g, redirect, render_template, request, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as ResponseBase

from api.admin.blueprint import bp
from api.services import services
from genq.store.admin_users import AdminPrincipal, AdminUsers

log = logging.getLogger(__name__)

SESSION_COOKIE = "genq_admin"
LOGIN_CSRF_COOKIE = "genq_admin_login"
_OPEN = {"admin.login", "admin.static"}  # reachable without a session

F = TypeVar("F", bound=Callable[..., Any])


def users() -> AdminUsers:
    return AdminUsers(services().sessions)


def principal() -> AdminPrincipal:
    admin: AdminPrincipal = g.admin
    return admin


def guard() -> ResponseBase | None:
    """Before every dashboard request: the no-user page, the login redirect, the CSRF check."""
    if request.endpoint == "admin.static":
        return None
    if users().count() == 0:
        return Response(render_template("admin/no_users.html"), status=503)
    g.admin = users().principal(request.cookies.get(SESSION_COOKIE))
    if request.endpoint in _OPEN:
        return None
    if g.admin is None:
        if request.path.startswith("/admin/data/"):
            return Response('{"error": {"code": "not_logged_in", "message": "log in at /admin/login"}}', 401,
                            mimetype="application/json")
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
    if request.method == "POST" and not _same(request.form.get("csrf_token"), g.admin.csrf_token):
        abort(403, "the form's CSRF token is missing or stale: reload the page and try again")
    return None


def require_admin(view: F) -> F:
    """Only an admin may run `view` (an action); a viewer gets 403."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not principal().can_act:
            abort(403, "viewers can look but not act")
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def secure_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "admin.static":
        response.headers["Cache-Control"] = "no-store"
    return response


def _same(given: str | None, expected: str | None) -> bool:
    return bool(given and expected) and hmac.compare_digest(str(given), str(expected))


def _safe_next(target: str | None) -> str:
    # only a path inside the dashboard: no open redirect
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return url_for("admin.overview")


def client_address() -> str | None:
    return request.remote_addr


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    error, status = None, 200
    if request.method == "POST":
        if not _same(request.form.get("csrf_token"), request.cookies.get(LOGIN_CSRF_COOKIE)):
            error, status = "The form expired: please try again.", 403
        else:
            result = users().login(request.form.get("username", ""), request.form.get("password", ""))
            if result.principal is not None and result.session_token is not None:
                response = redirect(_safe_next(request.args.get("next")))
                response.set_cookie(SESSION_COOKIE, result.session_token, httponly=True, samesite="Strict",
                                    secure=request.is_secure, path="/admin", max_age=12 * 3600)
                response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin")
                return response  # type: ignore[return-value]
            if result.locked_for_s > 0:
                error, status = (f"Too many failed attempts: try again in {result.locked_for_s:.0f} s."), 429
            else:
                error, status = "Wrong user name or password.", 401
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = Response(render_template("admin/login.html", csrf_token=token, error=error,
                                        username=request.form.get("username", "")), status=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure,
                        path="/admin")
    return response


@bp.post("/logout")
def logout() -> Response:
    users().logout(request.cookies.get(SESSION_COOKIE))
    response = redirect(url_for("admin.login"))
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response  # type: ignore[return-value]


def ensure_startup_admin(sessions: Any, username: str | None, password: str | None) -> None:
    """GENQ_ADMIN_USER / GENQ_ADMIN_PASSWORD: create (or update) that admin when the API starts. A database
    that is down or not migrated yet is logged, not fatal: the API starts and answers 503 as it does."""
    if not (username and password):
        return
    try:
        AdminUsers(sessions).put(username, password, "admin")
    except SQLAlchemyError as e:
        log.warning("GENQ_ADMIN_USER %r not created: the database is not ready (%s)", username, type(e).__name__)
