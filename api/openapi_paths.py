"""The path items of the jobs and batches resources in the OpenAPI document (see api/openapi.py)."""
from __future__ import annotations

from typing import Any

from api.batches import JSONL_TYPES
from api.json_depth import MAX_DEPTH
from api.list_query import DEFAULT_LIMIT, MAX_LIMIT, MAX_METADATA_FILTERS, METADATA_KEY_PATTERN
from api.openapi_schemas import JOB_STATUSES, Schema, ref
from api.prefer import MAX_WAIT_S
from genq.settings import Settings
from genq.store.idempotency import HEADER as IDEMPOTENCY_HEADER, KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN

JSON = "application/json"
SSE = "text/event-stream"


def json_response(schema: Schema, description: str, **extra: Any) -> Schema:
    """A response with a JSON body of `schema` (`extra`: e.g. its headers)."""
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def error(description: str) -> Schema:
    """An error response: the one error shape; `description` names its codes."""
    return json_response(ref("Error"), description)


def header(description: str, required: bool = True) -> Schema:
    """A string response header."""
    return {"description": description, "required": required, "schema": {"type": "string"}}


# responses any operation may give: a URL or headers over the app's limits (api/http_limits.py), a bug or an outage
EVERY_OPERATION = {
    "414": {"$ref": "#/components/responses/UriTooLong"},
    "431": {"$ref": "#/components/responses/HeadersTooLarge"},
    "500": {"$ref": "#/components/responses/InternalError"},
}
UNAVAILABLE_CODES = ("`database_unavailable`: the database cannot be reached; `database_not_migrated`: its "
                     "schema is missing or behind the code (`genq db upgrade`). Try again after `Retry-After`.")
SERVER_ERRORS = {"503": {"$ref": "#/components/responses/Unavailable"}, **EVERY_OPERATION}  # routes on the database


def unavailable(description: str) -> Schema:
    """A 503: a dependency is down; the error shape, with `Retry-After`."""
    return error(description) | {"headers": {"Retry-After": header("seconds to wait before trying again")}}


def _path_param(name: str, what: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
            "description": f"the {what}'s id (a UUID); any other value is a 404"}


JOB_ID = _path_param("job_id", "job")


def _sse_event(kind: str, data: Schema) -> Schema:
    """One Server-Sent Event as a client's parser gives it: its type, its id, its data (JSON text)."""
    return {
        "type": "object",
        "properties": {
            "event": {"const": kind},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "data": {"type": "string", "contentMediaType": JSON, "contentSchema": data},
        },
        "required": ["event", "id", "data"],
    }


def _create_job(settings: Settings) -> Schema:
    job = ref("Job")
    location = header("the job's URL (GET /v1/jobs/{job_id})")
    answered = {
        "Location": location,
        "Preference-Applied": header("`wait=N`: how long it waited, when `Prefer: wait` was given", False),
        "Idempotent-Replayed": {"description": "`true` when the Idempotency-Key had made this job already",
                                "required": False, "schema": {"const": "true"}},
    }
    return {
        "operationId": "createJob",
        "summary": "Submit a generation job",
        "description": "Validates the body, resolves the generation parameters (request over the model's "
                       "generation config over the service's defaults), records the job as `queued` and queues it.",
        "parameters": [
            {"name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
             "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
             "description": "the same key with the same body returns the job it made (kept 24 hours); with "
                            "another body it is a 422 `idempotency_key_reused`"},
            {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
             "description": f"`wait=N` (RFC 7240): answer with the finished job if it finishes within N seconds "
                            f"(at most {MAX_WAIT_S}; more is capped); other preferences are ignored"},
        ],
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("JobRequest")}}},
        "responses": {
            "200": json_response(job, "The job, finished: within `Prefer: wait`, or made earlier with this "
                                      "Idempotency-Key.", headers=answered),
            "202": json_response(job, "The job, queued or running. It is recorded before it is queued: with the "
                                      "broker down it is still accepted, and queued once the broker answers.",
                                 headers=answered),
            "400": error("`invalid_json`: the body does not parse as JSON."),
            "413": error(f"`payload_too_large`: the body is over {settings.max_body_bytes} bytes."),
            "415": error("`unsupported_media_type`: the body is not declared `application/json`."),
            "422": error("The body is not a valid job: `invalid_body`, `unknown_field`, `invalid_value`, "
                         "`invalid_input`, `unknown_model`, `invalid_param`, `context_length_exceeded` (the prompt's "
                         "tokens plus `params.max_new_tokens` do not fit the model's `context_length`; `field` is "
                         "`params.max_new_tokens`, or `prompt` / `messages` when the prompt alone fills it), "
                         "`webhook_url_invalid`, `webhook_url_forbidden`, `webhook_url_unresolvable`, "
                         "`webhook_events_filter_invalid`, "
                         f"`too_deep` (arrays and objects nested over {MAX_DEPTH} levels); "
                         "`field` names the field. A bad `Idempotency-Key` or `Prefer: wait` (`invalid_value`) "
                         "or a key reused with another body (`idempotency_key_reused`) names the header."),
            "503": unavailable(UNAVAILABLE_CODES),
            **EVERY_OPERATION,
        },
    }


def _list_jobs() -> Schema:
    def query(name: str, schema: Schema, description: str, **extra: Any) -> Schema:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description,
                **extra}

    statuses = {"type": "array", "items": {"type": "string", "enum": list(JOB_STATUSES)}, "minItems": 1}
    return {
        "operationId": "listJobs",
        "summary": "List jobs, newest first, a page at a time",
        "parameters": [
            query("status", statuses, "any of these statuses (also comma-separated in one value)",
                  style="form", explode=True),
            query("model", {"type": "string", "minLength": 1, "maxLength": 64}, "this model's jobs"),
            query("created_after", {"type": "string", "format": "date-time"},
                  "created strictly after (ISO 8601; no zone is UTC)"),
            query("created_before", {"type": "string", "format": "date-time"},
                  "created strictly before (ISO 8601; no zone is UTC)"),
            query("metadata", {"type": "object", "additionalProperties": {"type": "string"},
                               "propertyNames": {"pattern": METADATA_KEY_PATTERN},
                               "maxProperties": MAX_METADATA_FILTERS},
                  "`metadata[<key>]=<value>`: the job's metadata has that key with that string value (all given)",
                  style="deepObject", explode=True),
            query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                  "jobs per page"),
            query("cursor", {"type": "string", "minLength": 1}, "`next_cursor` of the previous page"),
        ],
        "responses": {
            "200": json_response(ref("JobList"), "One page."),
            "422": error("A bad or unknown query parameter (`invalid_value`, `unknown_field`), or a cursor this "
                         "API did not make; `field` names it."),
            **SERVER_ERRORS,
        },
    }


def _cancel_job() -> Schema:
    job = ref("Job")
    return {
        "operationId": "cancelJob",
        "summary": "Cancel a queued or running job",
        "parameters": [JOB_ID],
        "responses": {
            "200": json_response(job, "The job, canceled (also when it already was)."),
            "202": json_response(job, "The job, running: its worker is stopping it (it ends `canceled`, keeping "
                                      "its text so far)."),
            "404": error("`job_not_found`."),
            "409": error("`job_finished`: it had already ended otherwise."),
            **SERVER_ERRORS,
        },
    }


def job_paths(settings: Settings) -> dict[str, Schema]:
    get = {
        "operationId": "getJob",
        "summary": "Read a job",
        "parameters": [JOB_ID],
        "responses": {"200": json_response(ref("Job"), "The job."), "404": error("`job_not_found`."),
                      **SERVER_ERRORS},
    }
    resume = {"type": "string", "pattern": "^[0-9]{1,18}$"}
    events = {
        "operationId": "streamJobEvents",
        "summary": "The job's events as Server-Sent Events",
        "description": "A `retry:` hint, then one frame per event: `event: status` (data: StatusEvent), "
                       "`event: delta` (data: DeltaEvent, text as generated), and at the final status "
                       "`event: done` (data: the Job), after which the stream ends. `id:` is the event's "
                       "per-job sequence number. Comment lines (`: keep-alive`) are sent during silence. "
                       "`event: restart` (data: RestartEvent) says another worker took the job over as "
                       "attempt `attempt`: its text starts from nothing, so the deltas after the last "
                       "restart join to the job's output. A stream lasts at most GENQ_EVENTS_MAX_SECONDS, "
                       "then ends with a comment; resume it with `Last-Event-ID`.",
        "parameters": [
            JOB_ID,
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": resume,
             "description": "resume after this event id (EventSource sends it on reconnect)"},
            {"name": "last_event_id", "in": "query", "required": False, "schema": resume,
             "description": "as `Last-Event-ID`, for clients that cannot set headers; the header wins"},
        ],
        "responses": {
            "200": {"description": "The event stream, live until the job's final status. The schema describes "
                                   "each event (`event`, `id`, `data` as JSON), as OpenAPI 3.2's itemSchema does.",
                    "headers": {"Cache-Control": header("`no-cache`")},
                    "content": {SSE: {"schema": {"oneOf": [
                        _sse_event("status", ref("StatusEvent")),
                        _sse_event("delta", ref("DeltaEvent")),
                        _sse_event("restart", ref("RestartEvent")),
                        _sse_event("done", ref("Job")),
                    ]}}}},
            "400": error("`invalid_last_event_id`: not a non-negative integer."),
            "404": error("`job_not_found`."),
            "429": json_response(ref("Error"), "`too_many_streams`: this server's open streams "
                                 "(GENQ_EVENTS_MAX_STREAMS) or this client's (GENQ_EVENTS_MAX_STREAMS_PER_CLIENT) "
                                 "are at their limit.", headers={"Retry-After": header("seconds")}),
            **SERVER_ERRORS,
        },
    }
    deliveries = {
        "operationId": "listJobDeliveries",
        "summary": "The job's webhook deliveries, each with every attempt",
        "parameters": [JOB_ID],
        "responses": {"200": json_response(ref("WebhookDeliveryList"), "Oldest first."),
                      "404": error("`job_not_found`."), **SERVER_ERRORS},
    }
    redeliver = {
        "operationId": "redeliverWebhook",
        "summary": "Send a delivery's message again (same `webhook-id` and body), with a fresh schedule",
        "parameters": [JOB_ID, _path_param("delivery_id", "delivery")],
        "responses": {
            "202": json_response(ref("WebhookDelivery"), "The new delivery, due now."),
            "404": error("`job_not_found`, or `delivery_not_found` (the job has no such delivery)."),
            "409": error("`delivery_pending`: that message is still being delivered."),
            **SERVER_ERRORS,
        },
    }
    return {
        "/v1/jobs": {"post": _create_job(settings), "get": _list_jobs()},
        "/v1/jobs/{job_id}": {"get": get},
        "/v1/jobs/{job_id}/cancel": {"post": _cancel_job()},
        "/v1/jobs/{job_id}/events": {"get": events},
        "/v1/jobs/{job_id}/deliveries": {"get": deliveries},
        "/v1/jobs/{job_id}/deliveries/{delivery_id}/redeliver": {"post": redeliver},
    }


def batch_paths(settings: Settings) -> dict[str, Schema]:
    jsonl = {"type": "string", "description": "One BatchLine (see components) per line, as JSON; blank lines are "
             f"skipped; at most {settings.batch_max_lines} lines."}
    example = '{"custom_id": "a", "prompt": "Hi"}\n{"custom_id": "b", "prompt": "Bye"}\n'
    body = {mime: {"schema": jsonl, "example": example} for mime in JSONL_TYPES}
    body["multipart/form-data"] = {"schema": {
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary", "description": "the JSONL file"},
                       "metadata": {"type": "string", "description": "the batch's metadata, a JSON object"}},
        "required": ["file"],
    }}
    create = {
        "operationId": "createBatch",
        "summary": "Submit many jobs as one JSONL file",
        "description": "Every line is validated before anything is created; then all jobs are created in one "
                       "transaction and queued.",
        "parameters": [{"name": "metadata", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "the batch's metadata as a JSON object (with a JSONL body); at most "
                                       f"{settings.max_metadata_bytes} bytes"}],
        "requestBody": {"required": True, "content": body},
        "responses": {
            "202": json_response(ref("Batch"), "The batch, its jobs queued.",
                                 headers={"Location": header("the batch's URL (GET /v1/batches/{batch_id})")}),
            "413": error(f"`payload_too_large` (over {settings.batch_max_bytes} bytes) or `too_many_lines`."),
            "415": error("`unsupported_media_type`: neither JSONL nor multipart/form-data. (A malformed multipart "
                         "body reads as one without a `file` part: 422 `missing_file`.)"),
            "422": error("A bad line (`field` is `line[N]` or `line[N].<field>`, the message starts `line N:`), "
                         "`empty_batch`, `missing_file`, `duplicate_custom_id`, or bad `metadata`; a line or metadata "
                         f"nested over {MAX_DEPTH} levels is `too_deep`."),
            "503": unavailable(UNAVAILABLE_CODES),
            **EVERY_OPERATION,
        },
    }
    batch_id = _path_param("batch_id", "batch")
    get = {
        "operationId": "getBatch",
        "summary": "A batch's status and counts of its jobs by status",
        "parameters": [batch_id],
        "responses": {"200": json_response(ref("Batch"), "The batch."), "404": error("`batch_not_found`."),
                      **SERVER_ERRORS},
    }
    results = {
        "operationId": "getBatchResults",
        "summary": "The batch's jobs as JSONL, in file order",
        "description": "One BatchResultLine (see components) per line; unfinished jobs show their current status.",
        "parameters": [batch_id],
        "responses": {
            "200": {"description": "JSONL, one `{\"custom_id\", \"job\"}` object per line.",
                    "headers": {"Content-Disposition": header("an attachment file name")},
                    "content": {"application/jsonl": {"schema": {"type": "string"}}}},
            "404": error("`batch_not_found`."),
            **SERVER_ERRORS,
        },
    }
    return {
        "/v1/batches": {"post": create},
        "/v1/batches/{batch_id}": {"get": get},
        "/v1/batches/{batch_id}/results": {"get": results},
    }
