"""Request bodies to domain values; every bad input becomes an ApiError naming the field."""
from __future__ import annotations

import json
import math
from typing import Any

from flask import Request

from api.errors import ApiError
from api.json_depth import TooDeep, check_depth
from api.webhook_fields import parse_webhook
from genq.catalog import Catalog, ServedModel
from genq.lifecycle import SCHEDULE_FIELDS, Schedule, ScheduleError
from genq.submit import NewJob
from genq.webhooks import AllowList
from models.echo import short
from models.params import ContextOverflow, GenerationParams, ParamError
from models.prompting import PromptError

JOB_FIELDS = (
    "model", "prompt", "messages", "params", "metadata", "webhook", "webhook_events_filter", *SCHEDULE_FIELDS
)
MESSAGE_ROLES = ("system", "user", "assistant", "tool")
MAX_MESSAGES = 1024
MAX_FIELD_NAME = 64  # an unknown field's name longer than this is quoted short in the error


def json_body(request: Request) -> Any:
    """The request's JSON document: 415 if it is not declared JSON, 400 if it does not parse."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)")
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        return loads(raw)
    except TooDeep as e:
        raise ApiError(422, "too_deep", f"the body {e}", e.key) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {e}") from None


def loads(raw: bytes | str) -> Any:
    """Parse JSON as the API does: NaN, Infinity and numbers too large for a double (1e400) are refused
    (ValueError), since the database's JSON types and JSON itself have no such values, and so is nesting past
    MAX_DEPTH (TooDeep, a ValueError), measured before the parser recurses."""
    if isinstance(raw, bytes):
        raw = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads decodes bytes
    check_depth(raw)
    return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)


def check_storable_text(value: Any, field: str | None = None) -> None:
    """Refuse (ApiError 422 naming the field) a string anywhere in `value`, key or value, that the database
    cannot store: one holding U+0000 (PostgreSQL text and JSONB refuse it) or a lone surrogate (not UTF-8)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ApiError(422, "invalid_value", "must not contain the NUL character (U+0000)", field)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(422, "invalid_value", "must be valid Unicode (it holds a lone surrogate)", field) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{field}.{key}" if field else str(key)
            check_storable_text(key, where)
            check_storable_text(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_storable_text(item, f"{field}[{i}]")


def parse_new_job(
    body: Any, catalog: Catalog, max_metadata_bytes: int, webhook_allow: AllowList = AllowList()
) -> NewJob:
    """Validate a `POST /v1/jobs` body and resolve its generation parameters."""
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    check_storable_text(body)
    for key in body:
        if key not in JOB_FIELDS:
            raise ApiError(422, "unknown_field", f"unknown field {short(key)}; known: {', '.join(JOB_FIELDS)}",
                           _field_name(key))

    model_name = body.get("model")
    if model_name is None:
        model = catalog.default
    elif not isinstance(model_name, str):
        raise ApiError(422, "invalid_value", "must be a string", "model")
    else:
        found = catalog.get(model_name)
        if found is None:
            served = ", ".join(m.name for m in catalog.all())
            raise ApiError(422, "unknown_model", f"model {short(model_name)} is not served; served: {served}", "model")
        model = found

    has_prompt, has_messages = body.get("prompt") is not None, body.get("messages") is not None
    if has_prompt == has_messages:
        which = "both were given" if has_prompt else "neither was given"
        raise ApiError(422, "invalid_input", f"give exactly one of 'prompt' or 'messages' ({which})", "prompt")
    job_input = {"prompt": _prompt(body["prompt"])} if has_prompt else {"messages": _messages(body["messages"])}

    try:
        params = catalog.resolve_params(model, body.get("params"))
    except ParamError as e:
        raise ApiError(422, "invalid_param", e.message, e.field) from None

    metadata = _metadata(body.get("metadata"), max_metadata_bytes)
    webhook, events_filter = parse_webhook(body, webhook_allow)
    try:
        schedule = Schedule.from_body(body)
    except ScheduleError as e:
        raise ApiError(422, "invalid_value", e.message, e.field) from None
    prompt_tokens = _check_fits_model(model, params, job_input)  # last: it counts the prompt's tokens
    return NewJob(model.name, job_input, params.to_dict(), metadata, webhook, events_filter, schedule,
                  prompt_tokens=prompt_tokens)


def _check_fits_model(model: ServedModel, params: GenerationParams, job_input: dict[str, Any]) -> int | None:
    """What the worker's engine would refuse, refused now: bounds that depend on the model (top_k, stop ids),
    input its chat template refuses, and a prompt + max_new_tokens over its context length. Returns the
    prompt's tokens, as counted."""
    try:
        return model.check_request(params, job_input)
    except ContextOverflow as e:
        raise ApiError(422, "context_length_exceeded", e.message, e.field) from None
    except ParamError as e:
        raise ApiError(422, "invalid_param", e.message, e.field) from None
    except PromptError as e:
        raise ApiError(422, "invalid_value", e.message, e.field) from None


def _field_name(key: str) -> str:
    """A client's key as an error's `field` names it: as spelled, or quoted short when it is very long."""
    return key if len(key) <= MAX_FIELD_NAME else short(key)


def _prompt(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(422, "invalid_value", "must be a non-empty string", "prompt")
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ApiError(422, "invalid_value", "must be a non-empty list of {role, content} objects", "messages")
    if len(value) > MAX_MESSAGES:
        raise ApiError(422, "invalid_value", f"at most {MAX_MESSAGES} messages", "messages")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(422, "invalid_value", "must be an object with role and content", where)
        for key in message:
            if key not in ("role", "content"):
                raise ApiError(422, "unknown_field", f"unknown field {short(key)}", f"{where}.{_field_name(key)}")
        role, content = message.get("role"), message.get("content")
        if role not in MESSAGE_ROLES:
            raise ApiError(422, "invalid_value", f"must be one of {', '.join(MESSAGE_ROLES)}", f"{where}.role")
        if not isinstance(content, str):
            raise ApiError(422, "invalid_value", "must be a string", f"{where}.content")
        out.append({"role": role, "content": content})
    return out


def _metadata(value: Any, max_bytes: int) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_value", "must be an object", "metadata")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        raise ApiError(422, "invalid_value", f"is {size} bytes as JSON; at most {max_bytes}", "metadata")
    return value


def _refuse_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity; JSON does not, and the database's JSON types refuse them
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_metadata(value: Any, max_bytes: int) -> dict[str, Any] | None:
    """A client's `metadata` object (None allowed), bounded in size; raises ApiError 422 on field `metadata`."""
    check_storable_text(value, "metadata")
    return _metadata(value, max_bytes)
