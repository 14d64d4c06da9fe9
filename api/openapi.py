"""GET /v1/openapi.json: the OpenAPI 3.1 document of this API, built from the code's own limits.

`build_document(settings, served_models)` makes it; the schemas are in api/openapi_schemas.py and the jobs
and batches paths in api/openapi_paths.py. The document is built for the running service (its models, its
size limits), so it states what this instance accepts.
Every Flask route is described and every described path is a route (tests/service/test_openapi.py), and
schemathesis checks the live app against it (tests/service/test_openapi_schemathesis.py). The one exception
is the admin dashboard's blueprint (`UNDOCUMENTED_BLUEPRINTS`): HTML pages and forms for people behind a
login, not operations of the API. `/metrics` is an API operation and is described.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, jsonify

from api.auth import auth_required
from api.http_limits import MAX_HEADER_BYTES, MAX_HEADER_FIELD_BYTES, MAX_URL_BYTES
from api.openai.openapi import TAG as OPENAI_TAG, openai_paths, openai_schemas
from api.openapi_paths import (
    EVERY_OPERATION,
    SERVER_ERRORS,
    UNAVAILABLE_CODES,
    batch_paths,
    error,
    header,
    job_paths,
    json_response,
    unavailable,
)
from api.openapi_schemas import Schema, component_schemas, ref
from api.services import services
from genq.settings import Settings

bp = Blueprint("openapi", __name__, url_prefix="/v1")

OPENAPI_VERSION = "3.1.0"
UNDOCUMENTED_BLUEPRINTS = ("admin",)  # the dashboard at /admin (api/admin/): pages, not API operations


def _operation(operation_id: str, summary: str, responses: dict[str, Schema], database: bool = True) -> Schema:
    """An operation; `database`: it reads the database, so it may answer 503 when that is down."""
    return {"operationId": operation_id, "summary": summary,
            "responses": {**(SERVER_ERRORS if database else {}), **responses, **EVERY_OPERATION}}


def _service() -> dict[str, Schema]:
    secret = json_response(ref("WebhookSecret"), "The current signing secret and the older ones still signing.")
    return {
        "/v1/webhooks/secret": {"get": _operation("getWebhookSecret", "The webhook signing secret", {"200": secret})},
        "/v1/webhooks/secret/rotate": {"post": _operation(
            "rotateWebhookSecret", "Make a new current secret; the previous one keeps signing for the grace period",
            {"200": secret})},
        "/v1/models": {"get": _operation(
            "listModels", "The served models", {"200": json_response(ref("ModelList"), "Sorted by name.")},
            database=False)},
        "/healthz": {"get": _operation(
            "health", "The API answers, its database is reachable and migrated, its broker is reachable",
            {"200": json_response(ref("Health"), "Healthy: each check's state in words."),
             "503": unavailable("Unhealthy: the first failing check's code, `database_unavailable`, "
                                "`database_not_migrated` (run `genq db upgrade`) or `broker_unavailable`; the "
                                "message names every failing check.")})},
        "/metrics": {"get": _operation(
            "metrics", "Prometheus metrics: the service's state from the database, this API's HTTP requests",
            {"200": {"description": "Prometheus text exposition format (api/metrics.py names every series).",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}})},
        "/v1/openapi.json": {"get": _operation(
            "openapi", "This document", {"200": json_response({"type": "object"}, "OpenAPI 3.1.")},
            database=False)},
    }


PUBLIC_OPERATIONS = frozenset({"health", "openapi", "metrics"})  # api.auth.PUBLIC_ENDPOINTS: no key asked for
QUOTA_OPERATIONS = frozenset({"createJob", "createBatch"})  # they count against the key's quotas
SECURITY_SCHEME = "apiKey"


def _secure(paths: dict[str, Schema], required: bool) -> dict[str, Schema]:
    """Every operation but the public ones answers 401/403 to a missing, unknown or revoked key (when keys are
    required); those that submit answer 429 past a quota."""
    for item in paths.values():
        for operation in item.values():
            if operation["operationId"] in PUBLIC_OPERATIONS:
                operation["security"] = []
                continue
            if required:
                operation["responses"].update({"401": {"$ref": "#/components/responses/Unauthenticated"},
                                               "403": {"$ref": "#/components/responses/Revoked"}})
            if operation["operationId"] in QUOTA_OPERATIONS:
                operation["responses"]["429"] = {"$ref": "#/components/responses/QuotaExceeded"}
    return paths


def _quota_exceeded() -> Schema:
    return error("`concurrent_quota_exceeded` (the key's unfinished jobs would pass its `max_concurrent`) or "
                 "`tokens_quota_exceeded` (its tokens of the UTC day, prompt + `max_new_tokens` reserved per "
                 "job, would pass `tokens_per_day`). Nothing was created.") | {"headers": {
        "Retry-After": header("seconds until the limit is expected to be free"),
        "RateLimit-Policy": header('the key\'s quotas, e.g. `"tokens";q=100000;w=86400;qu="tokens", '
                                   '"concurrent";q=4;qu="concurrent-requests"`'),
        "RateLimit": header('the limit that refused it: `"tokens";r=<remaining>;t=<seconds to reset>`'),
    }}


def build_document(settings: Settings, served_models: Sequence[str]) -> dict[str, Any]:
    """The OpenAPI document of the API as configured by `settings`, serving `served_models`."""
    required = auth_required(settings.auth, settings.host)
    challenge = {"headers": {"WWW-Authenticate": header("`Bearer realm=\"genq\"`")}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "genq",
            "version": "v1",
            "description": "Asynchronous LLM text generation jobs. Every error is `{\"error\": {\"code\", "
                           "\"message\", \"field\"?}}`, except under /openai/v1 (the OpenAI-compatible "
                           "surface, tagged so), whose errors are OpenAI's `OpenAIError`.",
        },
        "tags": [{"name": OPENAI_TAG, "description": "The OpenAI-compatible surface under /openai/v1, for the "
                                                     "official `openai` client: OpenAI's objects and error shape."}],
        "paths": {**_secure({**job_paths(settings), **batch_paths(settings), **_service()}, required),
                  **openai_paths(settings)},
        "security": [{SECURITY_SCHEME: []}] if required else [],
        "components": {
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "http", "scheme": "bearer",
                "description": "`Authorization: Bearer <key>`, a key made by `genq keys create`. Required unless "
                               "GENQ_AUTH=off (the default only on a loopback bind address)."}},
            "schemas": {**component_schemas(served_models, settings.max_metadata_bytes), **openai_schemas()},
            "responses": {
                "Unauthenticated": error("`unauthenticated` (no `Authorization: Bearer` key) or `invalid_api_key` "
                                         "(no such key).") | challenge,
                "Revoked": error("`api_key_revoked`: the key was revoked (`genq keys revoke`).") | challenge,
                "QuotaExceeded": _quota_exceeded(),
                "UriTooLong": error(f"`uri_too_long`: the URL is over {MAX_URL_BYTES} bytes."),
                "HeadersTooLarge": error(f"`headers_too_large`: a header is over {MAX_HEADER_FIELD_BYTES} bytes "
                                         f"(`field` names it), or all are over {MAX_HEADER_BYTES} together."),
                "InternalError": error("`internal_error`: a bug (logged in full)."),
                "Unavailable": unavailable(UNAVAILABLE_CODES),
            },
        },
    }


@bp.get("/openapi.json")
def openapi_document() -> Response:
    svc = services()
    return jsonify(build_document(svc.settings, [m.name for m in svc.catalog.all()]))
