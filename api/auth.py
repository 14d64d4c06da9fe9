"""Who is calling: the API key of a request (`Authorization: Bearer <key>`), checked before every view.

`GENQ_AUTH=keys` requires a key on every route but the public ones (health, the OpenAPI document); `off` opens
the API to anyone who can reach it. Unset, it is `off` only when the API binds to a loopback address (the
embedded quick start) and `keys` otherwise; an open API says so in its log at start.

Other code asks `current_key_id()` (None when auth is off) or `current_quota()`; keys themselves are in
genq/store/api_keys.py. Errors: 401 `unauthenticated` (no key, or not a Bearer one), 401 `invalid_api_key`
(no such key), 403 `api_key_revoked`; each with `WWW-Authenticate: Bearer`. The key is read from the database
on every request, so a revoked key is refused at once by every API process.
"""
from __future__ import annotations

import ipaddress
import logging

from flask import g, request

from api.errors import ApiError
from api.services import services
from genq.store.api_keys import ApiKeyStore, KeyInfo
from genq.store.quotas import Quota
from genq.store.schema import Job

log = logging.getLogger(__name__)

MODES = ("keys", "off")
# Routes anyone may call (endpoint names): a load balancer's health check, the API's own description, and
# Prometheus' scrape (aggregates only: counts, depths and latencies, never a job or its owner).
PUBLIC_ENDPOINTS = frozenset({"health.healthz", "openapi.openapi_document", "metrics.metrics"})
# Blueprints with their own access control, not API keys: the admin dashboard (its users, sessions and CSRF)
OWN_ACCESS_BLUEPRINTS = frozenset({"admin"})
# Views whose job (the URL's job_id) is read in the same statement as the key: a poll, the API's most frequent
# request, then costs one round trip to the database, not two (genq/store/hot_reads.py)
JOB_WITH_KEY_ENDPOINTS = frozenset({"jobs.get_job"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="genq"'}
_G_KEY = "genq_api_key"
_G_JOB = "genq_job_read_with_key"


def auth_required(mode: str | None, host: str) -> bool:
    """Whether keys are required: GENQ_AUTH's `mode` (keys | off), or, unset, unless `host` is a loopback."""
    if mode is not None:
        return mode == "keys"
    return not is_loopback(host)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or "" / "0.0.0.0" (every address): reachable from elsewhere


def log_mode(required: bool, host: str) -> None:
    if required:
        log.info("API keys are required (GENQ_AUTH=keys)")
    else:
        log.warning("the API is OPEN: no API key is asked for (GENQ_AUTH=off, or unset with a loopback bind "
                    "address, %s); anyone who can reach it can read and cancel every job", host)


def authenticate() -> None:
    """A `before_request` hook: with auth on, the request's key, or a 401/403."""
    svc = services()
    if (not svc.auth_required or request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None
            or request.blueprint in OWN_ACCESS_BLUEPRINTS):
        return  # (no endpoint: the URL names no route, and the 404 reveals nothing)
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise ApiError(401, "unauthenticated", "send an API key: Authorization: Bearer <key>", "Authorization",
                       headers=_CHALLENGE)
    key = _find(svc.api_keys, value)
    if key is None:
        raise ApiError(401, "invalid_api_key", "no such API key", "Authorization", headers=_CHALLENGE)
    if key.revoked_at is not None:
        raise ApiError(403, "api_key_revoked", f"the API key {key.name!r} was revoked", "Authorization",
                       headers=_CHALLENGE)
    setattr(g, _G_KEY, key)


def _find(api_keys: ApiKeyStore, value: str) -> KeyInfo | None:
    """The key `value` names; for a JOB_WITH_KEY_ENDPOINTS view, its job read along (see job_read_with_key)."""
    job_id = (request.view_args or {}).get("job_id") if request.endpoint in JOB_WITH_KEY_ENDPOINTS else None
    if isinstance(job_id, str):
        both = api_keys.find_with_job(value, job_id)
        if both is not None:
            setattr(g, _G_JOB, (job_id, both[1]))
            return both[0]
    return api_keys.find(value)


def job_read_with_key(job_id: str) -> tuple[bool, Job | None]:
    """(True, the job or None) if `job_id` was read with this request's key, whoever owns it; else (False, None)."""
    read = g.get(_G_JOB)
    return (True, read[1]) if read is not None and read[0] == job_id else (False, None)


def current_key() -> KeyInfo | None:
    """The calling request's API key; None when auth is off (or on a public route)."""
    return g.get(_G_KEY)


def current_key_id() -> str | None:
    """The calling request's API key id (what its jobs' `owner` is); None when auth is off."""
    key = current_key()
    return key.id if key is not None else None


def current_quota() -> Quota | None:
    """The calling key's quotas, for the submit path; None when auth is off."""
    key = current_key()
    return Quota(key.id, key.max_concurrent, key.tokens_per_day) if key is not None else None
