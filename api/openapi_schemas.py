"""JSON Schemas (OpenAPI 3.1 components) of what the API accepts and returns.

Bounds, enums and limits are read from the code that enforces them (models.params, api.parsing, the webhook
core, the job and delivery tables, the settings), never copied, so the document cannot drift silently;
tests/service/test_openapi.py checks the document against the app and schemathesis checks the app against it.
Response objects say `additionalProperties: false` too: a field added to a response without being documented
fails the schemathesis test.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, get_args

from api.batch_parsing import CUSTOM_ID_MAX
from api.parsing import JOB_FIELDS, MAX_MESSAGES, MESSAGE_ROLES
from genq.lifecycle import (
    DEADLINE_MAX_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    MAX_ATTEMPTS_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TTL_MAX_SECONDS,
)
from genq.status import JobStatus
from genq.store.batches import COUNTED_STATUSES
from genq.store.schema import DELIVERY_STATUSES
from genq.webhooks.deliver import AttemptOutcome
from genq.webhooks.events import EVENTS, FILTER_FIELD
from genq.webhooks.urls import MAX_URL_LENGTH
from models.params import (
    BOUNDS,
    FINISH_REASONS,
    MAX_STOP_STRING_CHARS,
    MAX_STOP_STRINGS,
    MAX_STOP_TOKEN_IDS,
    MAX_VOCAB,
    Bound,
    GenerationParams,
)

Schema = dict[str, Any]

JOB_STATUSES = tuple(s.value for s in JobStatus)
DELIVERY_EVENTS = tuple(EVENTS.values())
ATTEMPT_OUTCOMES: tuple[str, ...] = get_args(AttemptOutcome)
BATCH_STATUSES = ("in_progress", "completed")  # genq.store.batches.BatchView.status


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """`schema` or JSON null."""
    if "$ref" in schema or "type" not in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def strict(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    """An object with exactly these properties (all required unless `required` says otherwise)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
        **extra,
    }


TIMESTAMP: Schema = {"type": "string", "format": "date-time", "description": "UTC, ISO 8601 with `Z`"}
ID: Schema = {"type": "string", "format": "uuid"}
METADATA: Schema = {"type": "object", "description": "the client's own object, stored and shown as given"}


def metadata_request(max_bytes: int) -> Schema:
    """`metadata` as a request may give it: null or an object of at most `max_bytes` as compact JSON."""
    return {"type": ["object", "null"],
            "description": f"the client's own object, at most {max_bytes} bytes as compact UTF-8 JSON"}


def param_schema(bound: Bound) -> Schema:
    """The JSON Schema of one scalar generation parameter, from its bound in models.params.BOUNDS."""
    if bound.kind == "bool":
        schema: Schema = {"type": "boolean"}
    else:
        schema = {"type": "integer" if bound.kind == "int" else "number"}
        if bound.lo is not None:
            schema["exclusiveMinimum" if bound.lo_open else "minimum"] = bound.lo
        if bound.hi is not None:
            schema["maximum"] = bound.hi
    return nullable(schema) if bound.nullable else schema


# bounds that depend on the model (models.params.check_for_model / check_fits), stated where they apply
_MODEL_BOUNDS = {
    "max_new_tokens": "The prompt's tokens plus this must fit the model's `context_length` (GET /v1/models), "
                      "else 422 `context_length_exceeded`.",
    "top_k": "When sampling, at most the model's `vocab_size` (GET /v1/models).",
    "logprobs": "At most the model's `vocab_size`.",
    "no_repeat_ngram_size": "At most the model's `context_length`.",
}


def _params_properties(request: bool) -> dict[str, Schema]:
    """Every generation parameter, in GenerationParams' order; `request`: as a client may send it."""
    out: dict[str, Schema] = {}
    for f in fields(GenerationParams):
        if f.name in BOUNDS:
            schema = param_schema(BOUNDS[f.name])
        elif f.name == "stop":
            one = {"type": "string", "minLength": 1, "maxLength": MAX_STOP_STRING_CHARS}
            strings = {"type": "array", "items": one, "maxItems": MAX_STOP_STRINGS}
            # a request may give one stop string alone; the resolved record always holds a list
            schema = {"oneOf": [one, strings]} if request else strings
        elif f.name == "stop_token_ids":
            schema = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": MAX_VOCAB - 1},
                      "maxItems": MAX_STOP_TOKEN_IDS, "description": "Token ids below the model's `vocab_size`."}
        else:  # a parameter added to GenerationParams without a bound or a case here: fail loudly
            raise TypeError(f"no schema for generation parameter {f.name!r}")
        if f.name in _MODEL_BOUNDS:
            schema = {**schema, "description": _MODEL_BOUNDS[f.name]}
        # no `default`: it depends on the model (GET /v1/models shows each model's generation_defaults)
        out[f.name] = schema
    return out


def _message() -> Schema:
    return strict({"role": {"type": "string", "enum": list(MESSAGE_ROLES)}, "content": {"type": "string"}})


def _job_request(served: Sequence[str], max_metadata_bytes: int) -> Schema:
    properties: dict[str, Schema] = {
        "model": {"type": ["string", "null"], "enum": [*served, None],
                  "description": "a served model's name (GET /v1/models); null or absent: the default model"},
        "prompt": {"type": ["string", "null"], "minLength": 1, "description": "plain text, used as given"},
        "messages": {"type": ["array", "null"], "items": ref("Message"), "minItems": 1, "maxItems": MAX_MESSAGES,
                     "description": "a chat, rendered with the model's chat template"},
        "params": nullable(ref("GenerationParamsRequest")),
        "metadata": metadata_request(max_metadata_bytes),
        "webhook": {"type": ["string", "null"], "format": "uri", "maxLength": MAX_URL_LENGTH,
                    "description": "an http(s) URL on a public address (or one GENQ_WEBHOOK_ALLOW lists); the "
                    "job object is POSTed there, signed per Standard Webhooks, on the events of "
                    f"`{FILTER_FIELD}`"},
        FILTER_FIELD: {"type": ["array", "null"], "items": {"type": "string", "enum": sorted(EVENTS)},
                       "minItems": 1, "description": "only with `webhook`; default [\"completed\"]"},
        "priority": {"type": ["integer", "null"], "minimum": PRIORITY_MIN, "maximum": PRIORITY_MAX, "default": 0,
                     "description": "higher is delivered to workers first, and is ahead in `queue_position`"},
        "ttl_seconds": {"type": ["integer", "null"], "minimum": 1, "maximum": TTL_MAX_SECONDS,
                        "description": "not started by then: the job ends `expired`"},
        "deadline_seconds": {"type": ["integer", "null"], "minimum": 1, "maximum": DEADLINE_MAX_SECONDS,
                             "description": "run time allowed per attempt; past it the job fails "
                                            "`deadline_exceeded`, keeping its text so far"},
        "max_attempts": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_ATTEMPTS_MAX,
                         "default": DEFAULT_MAX_ATTEMPTS, "description": "how many times the job may be started"},
    }
    if set(properties) != set(JOB_FIELDS):  # a field added to the parser must be described here
        raise TypeError(f"the job request schema must describe exactly {JOB_FIELDS}")
    return {
        "type": "object",
        "description": "Exactly one of `prompt` and `messages` is given (not null). No string anywhere may hold "
                       "U+0000 (the database cannot store it).",
        "properties": properties,
        "additionalProperties": False,
        "oneOf": [
            {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
            {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
        ],
    }


def _job() -> Schema:
    usage = strict({"prompt_tokens": {"type": ["integer", "null"]}, "completion_tokens": {"type": ["integer", "null"]}})
    output = strict(
        {
            "text": {"type": ["string", "null"]},
            "finish_reason": {"type": ["string", "null"], "enum": [*FINISH_REASONS, None]},
            "usage": usage,
            "logprobs": {"type": "array", "items": {"type": "object"},
                         "description": "one entry per generated token, when params.logprobs was set"},
        },
        required=["text", "finish_reason", "usage"],
    )
    job_input = {"oneOf": [
        strict({"prompt": {"type": "string"}}),
        strict({"messages": {"type": "array", "items": ref("Message")}}),
    ]}
    return strict({
        "id": ID,
        "object": {"const": "job"},
        "status": {"type": "string", "enum": list(JOB_STATUSES)},
        "model": {"type": "string"},
        "created_at": TIMESTAMP,
        "started_at": nullable(TIMESTAMP),
        "completed_at": nullable(TIMESTAMP),
        "attempts": {"type": "integer", "minimum": 0},
        "input": job_input,
        "params": ref("GenerationParams"),
        "output": {**nullable(output), "description": "once succeeded, or canceled or failed (a deadline) with "
                                                       "partial output"},
        "error": nullable(strict({"code": {"type": "string"}, "message": {"type": ["string", "null"]}})),
        "metadata": nullable(METADATA),
        "webhook": {"type": ["string", "null"]},
        FILTER_FIELD: {"type": ["array", "null"], "items": {"type": "string", "enum": sorted(EVENTS)}},
        "batch_id": nullable(ID),
        "custom_id": {"type": ["string", "null"]},
        "priority": {"type": "integer", "minimum": PRIORITY_MIN, "maximum": PRIORITY_MAX},
        "ttl_seconds": {"type": ["integer", "null"]},
        "expires_at": {**nullable(TIMESTAMP), "description": "created_at + ttl_seconds"},
        "deadline_seconds": {"type": ["integer", "null"]},
        "max_attempts": {"type": "integer", "minimum": 1},
        "cancel_requested_at": {**nullable(TIMESTAMP), "description": "a cancel was asked while it ran"},
        "queue_position": {"type": ["integer", "null"], "minimum": 0,
                           "description": "queued jobs of its model ahead of it (GET /v1/jobs, GET /v1/jobs/{id} "
                                          "and POST answers; the latter two as of a snapshot of the queue at most "
                                          "GENQ_QUEUE_INFO_MAX_AGE_MS old, counting this API process's own newer "
                                          "submissions); null once started and elsewhere"},
        "estimated_wait_seconds": {"type": ["number", "null"], "minimum": 0,
                                   "description": "(position + 1) / the model's recent throughput; null when "
                                                  "unknown"},
        "queue_position_at_least": {
            "type": "boolean",
            "description": "true when so many jobs are ahead that `queue_position` stopped counting: at least "
                           "that many (a poll counts up to 1,000), and the estimated wait at least that long"},
        "queue_paused": {"type": "boolean",
                         "description": "its model's queue is paused by an operator: the job waits, keeping its "
                                        "place, until the queue is resumed (false once started)"},
    })


def _batch() -> Schema:
    counts = {"total": {"type": "integer", "minimum": 0}}
    counts.update({s: {"type": "integer", "minimum": 0} for s in COUNTED_STATUSES})
    return strict({
        "id": ID,
        "object": {"const": "batch"},
        "status": {"type": "string", "enum": list(BATCH_STATUSES)},
        "created_at": TIMESTAMP,
        "completed_at": {**nullable(TIMESTAMP), "description": "when its last job finished, once all have"},
        "counts": strict(counts),
        "metadata": nullable(METADATA),
    })


def _batch_line(job_request: Schema) -> Schema:
    custom_id = {"type": "string", "minLength": 1, "maxLength": CUSTOM_ID_MAX, "description": "unique in the batch"}
    return {
        **job_request,
        "description": "One line of a batch file: a POST /v1/jobs body plus `custom_id`.",
        "properties": {"custom_id": custom_id, **job_request["properties"]},
        "required": ["custom_id"],
    }


def _delivery() -> Schema:
    attempt = strict({
        "number": {"type": "integer", "minimum": 1},
        "started_at": TIMESTAMP,
        "outcome": {"type": "string", "enum": list(ATTEMPT_OUTCOMES)},
        "status_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "duration_s": {"type": "number", "minimum": 0},
        "response_excerpt": {"type": "string"},
        "next_retry_at": nullable(TIMESTAMP),
    })
    return strict({
        "id": ID,
        "object": {"const": "webhook_delivery"},
        "job_id": ID,
        "event": {"type": "string", "enum": list(DELIVERY_EVENTS)},
        "webhook_id": {"type": "string", "description": "the `webhook-id` header: one per job and event"},
        "url": {"type": "string"},
        "status": {"type": "string", "enum": list(DELIVERY_STATUSES)},
        "attempt_count": {"type": "integer", "minimum": 0},
        "next_attempt_at": nullable(TIMESTAMP),
        "redelivery_of": nullable(ID),
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "attempts": {"type": "array", "items": attempt},
    })


def _model() -> Schema:
    return strict({
        "name": {"type": "string"},
        "object": {"const": "model"},
        "default": {"type": "boolean"},
        "source": {"type": "string", "enum": ["gguf", "hf"]},  # genq.settings.ModelSpec.kind
        "quantization": {"type": ["string", "null"]},
        "context_length": {"type": "integer", "minimum": 1,
                           "description": "the most tokens one job may have, its prompt plus `max_new_tokens`: "
                                          "GENQ_MAX_LEN capped by the model's own context length"},
        "vocab_size": {"type": ["integer", "null"], "minimum": 1,
                       "description": "`top_k` (when sampling), `logprobs` and `stop_token_ids` stay within it"},
        "generation_defaults": ref("GenerationParams"),
    })


def _secret() -> Schema:
    previous = strict({"created_at": TIMESTAMP, "signs_until": TIMESTAMP})
    return strict({
        "object": {"const": "webhook_secret"},
        "secret": {"type": "string", "pattern": "^whsec_", "description": "verify webhooks with it"},
        "created_at": TIMESTAMP,
        "grace_period_s": {"type": "integer", "minimum": 0},
        "previous": {"type": "array", "items": previous,
                     "description": "older secrets messages are still signed with, until `signs_until`"},
    })


def _list_of(item: str) -> Schema:
    return strict({"object": {"const": "list"}, "data": {"type": "array", "items": ref(item)}})


def _job_page() -> Schema:
    return strict({
        "object": {"const": "list"},
        "data": {"type": "array", "items": ref("Job"), "description": "newest first"},
        "next_cursor": {"type": ["string", "null"], "description": "pass as `cursor` for the next page"},
        "has_more": {"type": "boolean"},
    })


def _sse_event_data() -> dict[str, Schema]:
    at = {"at": TIMESTAMP}
    attempt = {"attempt": {"type": "integer", "minimum": 1,
                           "description": "the attempt the job is now running (on `running` only)"}}
    return {
        "StatusEvent": strict({"status": {"type": "string", "enum": list(JOB_STATUSES)}, **attempt, **at},
                              required=["status", "at"]),
        "DeltaEvent": strict({"text": {"type": "string"}, **at}),
        "RestartEvent": strict({"status": {"const": "running"}, **attempt, **at}),
    }


def component_schemas(served_models: Sequence[str], max_metadata_bytes: int) -> dict[str, Schema]:
    """Every named schema of the document, for a service serving `served_models`."""
    job_request = _job_request(served_models, max_metadata_bytes)
    return {
        "Error": strict({"error": strict(
            {"code": {"type": "string", "description": "machine-readable, e.g. `invalid_param`"},
             "message": {"type": "string", "minLength": 1},
             "field": {"type": "string", "description": "the offending field, as the client spelled it: "
                       "`params.top_p`, `messages[0].role`, `line[3].prompt`, a header name"}},
            required=["code", "message"],
        )}),
        "JobRequest": job_request,
        "Message": _message(),
        "GenerationParamsRequest": {
            **strict(_params_properties(request=True), required=[]),
            "description": "Any subset; each absent one comes from the model's generation config, else the "
                           "service's defaults (GET /v1/models shows the result per model). `min_new_tokens` must "
                           "not exceed `max_new_tokens`; a sampled job (`do_sample`) without a `seed` gets one "
                           "drawn.",
        },
        "GenerationParams": {**strict(_params_properties(request=False)),
                             "description": "The resolved parameters a job runs with."},
        "Job": _job(),
        "JobList": _job_page(),
        "Batch": _batch(),
        "BatchLine": _batch_line(job_request),
        "BatchResultLine": strict({"custom_id": {"type": "string"}, "job": ref("Job")}),
        "WebhookDelivery": _delivery(),
        "WebhookDeliveryList": _list_of("WebhookDelivery"),
        "WebhookSecret": _secret(),
        "Model": _model(),
        "ModelList": _list_of("Model"),
        "Health": strict({"status": {"const": "ok"}, "checks": strict(
            {name: {"type": "string"} for name in ("database", "migrations", "broker")})}),
        **_sse_event_data(),
    }
