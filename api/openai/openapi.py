"""The OpenAI-compatible surface in genq's OpenAPI document (api/openapi.py): every /openai/v1 route, tagged
`OpenAI-compatible`. The schemas give the fields genq reads and writes; OpenAI's own API reference is the full
description of each object. Its errors are OpenAI's shape (`OpenAIError`), not genq's.
"""
from __future__ import annotations

from typing import Any

from api.openai.requests import UNSUPPORTED
from api.openai.routes import PREFIX
from genq.settings import Settings

Schema = dict[str, Any]
TAG = "OpenAI-compatible"
JSON = "application/json"
_ERR = "#/components/schemas/OpenAIError"


def _error(description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": {"$ref": _ERR}}}}


def _ok(schema: Schema, description: str, media: str = JSON) -> Schema:
    return {"description": description, "content": {media: {"schema": schema}}}


def _obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return {"type": "object", "properties": properties, "required": required or []}


# responses every OpenAI-compatible operation may give, in OpenAI's error shape
_ALWAYS = {
    "401": _error("AuthenticationError: no `Authorization: Bearer` key, or an unknown one (when keys are required)."),
    "403": _error("PermissionDeniedError: the key was revoked."),
    "414": _error("`uri_too_long`."),
    "431": _error("`headers_too_large`."),
    "500": _error("`internal_error` (a bug, logged), or the request's job failed (its error code)."),
    "503": _error("`database_unavailable`, `database_not_migrated`: try again later."),
}
_BAD = _error("BadRequestError: an invalid request; `param` names the field, `code` says why (genq's codes, "
              "and `unsupported_parameter` / `unsupported_value` for what genq does not implement).")


def _op(operation_id: str, summary: str, responses: dict[str, Schema], **extra: Any) -> Schema:
    return {"tags": [TAG], "operationId": operation_id, "summary": summary,
            "responses": {**responses, **_ALWAYS}, **extra}


def _path(name: str, what: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": what}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _completion_request(chat: bool) -> Schema:
    common: dict[str, Schema] = {
        "model": {"type": "string", "description": "a served model (GET /openai/v1/models); default: genq's"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "description": "default 1; 0 is greedy"},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "seed": {"type": "integer", "minimum": 0},
        "n": {"const": 1},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "stream": {"type": "boolean"},
        "stream_options": _obj({"include_usage": {"type": "boolean"}}),
        "metadata": {"type": "object"},
    }
    if chat:
        return _obj({"messages": {"type": "array", "items": _obj({
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _obj(
                {"type": {"const": "text"}, "text": {"type": "string"}})}]}}, ["role", "content"])},
                     "max_completion_tokens": {"type": "integer", "minimum": 1}, "logprobs": {"type": "boolean"},
                     "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20}, **common}, ["messages"])
    return _obj({"prompt": {"type": "string"}, "logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
                 **common}, ["prompt"])


def _completions(chat: bool) -> Schema:
    kind = "chat.completion" if chat else "text_completion"
    return _op(
        "openaiCreateChatCompletion" if chat else "openaiCreateCompletion",
        f"OpenAI's create {'chat ' if chat else ''}completion: a genq job, answered when it finishes",
        {"200": {"description": f"A `{kind}` object (its `id` is the job's), or with `stream: true` a "
                                f"`text/event-stream` of `{kind}{'.chunk' if chat else ''}` chunks ending "
                                "`data: [DONE]`.",
                 "content": {JSON: {"schema": _obj({"id": {"type": "string"}, "object": {"const": kind},
                                                    "choices": {"type": "array"}, "usage": {"type": "object"}})},
                             "text/event-stream": {"schema": {"type": "string"}}}},
         "400": _BAD, "404": _error("`model_not_found`."),
         "409": _error("`job_canceled`: the job was canceled from elsewhere."),
         "429": _error("RateLimitError: `too_many_streams` (the stream caps), or the key's quota "
                       "(`concurrent_quota_exceeded`, `tokens_quota_exceeded`, with `Retry-After`).")},
        description="Not supported, a 400 naming the parameter: " + ", ".join(sorted(UNSUPPORTED)) +
                    ", `n` > 1, `logit_bias`, `response_format` other than text. A client that disconnects "
                    "cancels its job.",
        requestBody={"required": True, "content": {JSON: {"schema": _completion_request(chat)}}},
    )


FILE = _obj({"id": {"type": "string"}, "object": {"const": "file"}, "bytes": {"type": "integer"},
             "created_at": {"type": "integer"}, "filename": {"type": "string"}, "purpose": {"type": "string"}})
BATCH = _obj({"id": {"type": "string"}, "object": {"const": "batch"}, "endpoint": {"type": "string"},
              "status": {"enum": ["in_progress", "completed", "cancelling", "cancelled"]},
              "input_file_id": {"type": "string"}, "output_file_id": {"type": ["string", "null"]},
              "error_file_id": {"type": ["string", "null"]}, "request_counts": {"type": "object"}})


def _list(item: Schema) -> Schema:
    return _obj({"object": {"const": "list"}, "data": {"type": "array", "items": item},
                 "has_more": {"type": "boolean"}})


def openai_paths(settings: Settings) -> dict[str, Schema]:
    """The path items of /openai/v1."""
    model_id, file_id = _path("model_id", "a served model's name"), _path("file_id", "a file's id")
    batch_id = _path("batch_id", "a batch's id (a genq batch's)")
    model = _obj({"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                  "owned_by": {"type": "string"}})
    after = _query("after", {"type": "string"}, "the last id of the previous page")
    p = PREFIX
    return {
        f"{p}/models": {"get": _op("openaiListModels", "OpenAI's list models: the served models",
                                   {"200": _ok(_list(model), "The served models.")})},
        f"{p}/models/{{model_id}}": {"get": _op("openaiRetrieveModel", "OpenAI's retrieve model",
                                                {"200": _ok(model, "The model."),
                                                 "404": _error("`model_not_found`.")}, parameters=[model_id])},
        f"{p}/chat/completions": {"post": _completions(chat=True)},
        f"{p}/completions": {"post": _completions(chat=False)},
        f"{p}/files": {
            "post": _op("openaiCreateFile", "OpenAI's upload file (purpose `batch` only)",
                        {"200": _ok(FILE, "The file."), "400": _BAD,
                         "413": _error(f"Over {settings.batch_max_bytes} bytes.")},
                        requestBody={"required": True, "content": {"multipart/form-data": {"schema": _obj(
                            {"file": {"type": "string", "contentMediaType": "application/octet-stream"},
                             "purpose": {"const": "batch"}}, ["file", "purpose"])}}}),
            "get": _op("openaiListFiles", "OpenAI's list files (the uploaded ones), newest first",
                       {"200": _ok(_list(FILE), "One page."), "400": _BAD},
                       parameters=[_query("limit", {"type": "integer", "minimum": 1}, "files per page"),
                                   _query("purpose", {"type": "string"}, "only this purpose"), after]),
        },
        f"{p}/files/{{file_id}}": {
            "get": _op("openaiRetrieveFile", "OpenAI's retrieve file (a batch's output and error files included)",
                       {"200": _ok(FILE, "The file."), "404": _error("`file_not_found`.")}, parameters=[file_id]),
            "delete": _op("openaiDeleteFile", "OpenAI's delete file (an uploaded one)",
                          {"200": _ok(_obj({"id": {"type": "string"}, "deleted": {"const": True}}), "Deleted."),
                           "400": _BAD, "404": _error("`file_not_found`.")}, parameters=[file_id]),
        },
        f"{p}/files/{{file_id}}/content": {"get": _op(
            "openaiFileContent", "OpenAI's file content: an upload as stored; a batch's output or error file as "
                                 "JSONL lines {id, custom_id, response: {status_code, request_id, body}, error}",
            {"200": {"description": "The content.", "content": {"application/octet-stream": {"schema": {
                "type": "string"}}, "application/jsonl": {"schema": {"type": "string"}}}},
             "404": _error("`file_not_found`.")}, parameters=[file_id])},
        f"{p}/batches": {
            "post": _op("openaiCreateBatch", "OpenAI's create batch: every line validated, then one genq batch",
                        {"200": _ok(BATCH, "The batch."), "400": _BAD, "404": _error("`file_not_found`."),
                         "429": _error("RateLimitError: the batch would pass the key's quota; nothing was "
                                       "created.")},
                        requestBody={"required": True, "content": {JSON: {"schema": _obj(
                            {"input_file_id": {"type": "string"},
                             "endpoint": {"enum": ["/v1/chat/completions", "/v1/completions"]},
                             "completion_window": {"const": "24h"}, "metadata": {"type": "object"}},
                            ["input_file_id", "endpoint", "completion_window"])}}}),
            "get": _op("openaiListBatches", "OpenAI's list batches, newest first",
                       {"200": _ok(_list(BATCH), "One page."), "400": _BAD},
                       parameters=[_query("limit", {"type": "integer", "minimum": 1, "maximum": 100},
                                          "batches per page"), after]),
        },
        f"{p}/batches/{{batch_id}}": {"get": _op("openaiRetrieveBatch", "OpenAI's retrieve batch",
                                                 {"200": _ok(BATCH, "The batch."),
                                                  "404": _error("`batch_not_found`.")}, parameters=[batch_id])},
        f"{p}/batches/{{batch_id}}/cancel": {"post": _op(
            "openaiCancelBatch", "OpenAI's cancel batch: its live jobs are canceled",
            {"200": _ok(BATCH, "The batch, `cancelling` or `cancelled` (a finished one stays `completed`)."),
             "404": _error("`batch_not_found`.")}, parameters=[batch_id])},
    }


def openai_schemas() -> dict[str, Schema]:
    """The component schemas the surface's operations name."""
    return {"OpenAIError": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "description": "OpenAI's error shape (only under /openai/v1).",
        "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"],
                                 "additionalProperties": False, "properties": {
                                     "message": {"type": "string"}, "type": {"type": "string"},
                                     "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
    }}
