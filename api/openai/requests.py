"""OpenAI request bodies (chat completions, completions) to genq jobs.

A request is translated to a `POST /v1/jobs` body and validated by genq's own parser (api/parsing.py), so an
OpenAI request is refused exactly where a genq job would be, and an error names the field as OpenAI spells it.
Decoding follows OpenAI's semantics, stated in full so that no model default changes them: `temperature`
defaults to 1 (sampling), 0 is greedy; sampling is over the whole vocabulary (no top-k) unless `top_p` says
otherwise; no repetition penalty; `presence_penalty` / `frequency_penalty` are the engine's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.errors import ApiError
from api.openai.errors import OpenAIError, from_api_error
from api.parsing import parse_new_job
from genq.catalog import Catalog
from genq.submit import NewJob
from genq.webhooks import AllowList
from models.echo import short

CHAT, COMPLETION = "/v1/chat/completions", "/v1/completions"
MAX_TEMPERATURE = 2.0  # OpenAI's range is [0, 2]
MAX_TOP_LOGPROBS = 20

# Accepted and honoured.
_COMMON = ("model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "stop", "seed", "n",
           "presence_penalty", "frequency_penalty", "logprobs", "metadata")
# Accepted and ignored: they change nothing that genq does.
_IGNORED = ("user", "store", "service_tier", "parallel_tool_calls", "safety_identifier", "prompt_cache_key")
_CHAT_FIELDS = (*_COMMON, "messages", "max_completion_tokens", "top_logprobs", "logit_bias", "response_format",
                *_IGNORED)
_COMPLETION_FIELDS = (*_COMMON, "prompt", "best_of", "echo", "suffix", "logit_bias", *_IGNORED)
# Known to OpenAI, not supported here: a clear 400 rather than a silent difference.
UNSUPPORTED = {
    "tools": "tool calling is not supported", "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported", "function_call": "function calling is not supported",
    "audio": "audio output is not supported", "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported", "web_search_options": "web search is not supported",
    "reasoning_effort": "the served models do not reason", "verbosity": "not supported",
}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


@dataclass(frozen=True)
class OpenAIRequest:
    """A validated request: the job to submit and how to answer."""

    endpoint: str  # CHAT | COMPLETION
    job: NewJob
    stream: bool
    include_usage: bool


def parse_request(endpoint: str, body: Any, catalog: Catalog, max_metadata_bytes: int,
                  webhook_allow: AllowList = AllowList()) -> OpenAIRequest:
    """Validate an OpenAI request body for `endpoint`; raises OpenAIError (400, 404 for an unknown model)."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a JSON object", "invalid_body")
    allowed = _CHAT_FIELDS if endpoint == CHAT else _COMPLETION_FIELDS
    for key in body:
        if key in UNSUPPORTED:
            raise OpenAIError(400, f"{key}: {UNSUPPORTED[key]} by this service", "unsupported_parameter", key)
        if key not in allowed:
            raise OpenAIError(400, f"Unrecognized request argument supplied: {short(key)}", "unknown_parameter",
                              str(key)[:64])
    _check_unsupported_values(endpoint, body)
    names: dict[str, str] = {}  # genq field -> the request's
    params = _params(endpoint, body, names)
    genq: dict[str, Any] = {"params": params}
    if body.get("model") is not None:
        genq["model"] = body["model"]
    if body.get("metadata") is not None:
        genq["metadata"] = body["metadata"]
    if endpoint == CHAT:
        genq["messages"] = _messages(body.get("messages"))
    else:
        genq["prompt"] = _prompt(body.get("prompt"))
    try:
        job = parse_new_job(genq, catalog, max_metadata_bytes, webhook_allow)
    except ApiError as e:
        if e.code == "unknown_model":
            raise OpenAIError(404, e.message, "model_not_found", "model") from None
        raise from_api_error(e, _openai_field(e.field, names)) from None
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise OpenAIError(400, "stream_options: only {\"include_usage\": bool} is supported", "invalid_value",
                          "stream_options")
    if options is not None and not stream:
        raise OpenAIError(400, "stream_options is only allowed with stream: true", "invalid_value", "stream_options")
    include_usage = bool(options and _bool(options, "include_usage", "stream_options.include_usage"))
    return OpenAIRequest(endpoint, job, stream, include_usage)


def _params(endpoint: str, body: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """genq generation parameters for an OpenAI request (names: genq's field -> the request's)."""
    p: dict[str, Any] = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
    max_tokens = body.get("max_completion_tokens")
    names["params.max_new_tokens"] = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, names["params.max_new_tokens"] = body.get("max_tokens"), "max_tokens"
    elif body.get("max_tokens") is not None and body["max_tokens"] != max_tokens:
        raise OpenAIError(400, "max_tokens and max_completion_tokens differ; give one", "invalid_value", "max_tokens")
    if max_tokens is not None:
        p["max_new_tokens"] = max_tokens
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not (
            0 <= temperature <= MAX_TEMPERATURE):
        raise OpenAIError(400, f"temperature must be a number in [0, {MAX_TEMPERATURE:g}]", "invalid_value",
                          "temperature")
    p["do_sample"] = temperature > 0
    if temperature > 0:
        p["temperature"] = temperature
    for name in ("top_p", "seed", "presence_penalty", "frequency_penalty"):
        if body.get(name) is not None:
            p[name] = body[name]
    if body.get("stop") is not None:
        p["stop"] = body["stop"]
    if endpoint == CHAT:
        top = body.get("top_logprobs")
        if _bool(body, "logprobs"):
            p["logprobs"] = 0 if top is None else top
        elif top is not None:
            raise OpenAIError(400, "top_logprobs requires logprobs: true", "invalid_value", "top_logprobs")
        names["params.logprobs"] = "top_logprobs"
    elif body.get("logprobs") is not None:
        p["logprobs"] = body["logprobs"]
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise OpenAIError(400, "only n = 1 is supported: one choice per request (send several requests, or a "
                               "batch, for more)", "unsupported_value", "n")
    return p


def _check_unsupported_values(endpoint: str, body: dict[str, Any]) -> None:
    if body.get("logit_bias"):
        raise OpenAIError(400, "logit_bias is not supported", "unsupported_value", "logit_bias")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise OpenAIError(400, "only response_format {\"type\": \"text\"} is supported (no JSON mode or schema)",
                          "unsupported_value", "response_format")
    if endpoint == COMPLETION:
        if body.get("echo"):
            raise OpenAIError(400, "echo is not supported", "unsupported_value", "echo")
        if body.get("suffix"):
            raise OpenAIError(400, "suffix (insertion) is not supported", "unsupported_value", "suffix")
        if body.get("best_of") not in (None, 1):
            raise OpenAIError(400, "only best_of = 1 is supported", "unsupported_value", "best_of")


def _bool(body: dict[str, Any], key: str, param: str | None = None) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise OpenAIError(400, f"{param or key} must be true or false", "invalid_value", param or key)
    return value


def _messages(value: Any) -> Any:
    """OpenAI messages as genq's {role, content}: `developer` is a system message, content parts of type text
    are joined, `name` is dropped; anything else (images, tool calls) is refused."""
    if not isinstance(value, list):
        return value  # genq's parser says what is wrong with it
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            out.append(message)
            continue
        where = f"messages[{i}]"
        for key in message:
            if key not in ("role", "content", "name", "tool_call_id", "refusal"):
                raise OpenAIError(400, f"{where}.{short(key)} is not supported", "unsupported_parameter",
                                  f"{where}.{str(key)[:64]}")
        role = _ROLES.get(message.get("role"), message.get("role"))  # type: ignore[arg-type]
        out.append({"role": role, "content": _content(message.get("content"), f"{where}.content")})
    return out


def _content(value: Any, where: str) -> Any:
    if not isinstance(value, list):
        return "" if value is None else value
    texts = []
    for j, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise OpenAIError(400, "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported",
                              "unsupported_value", f"{where}[{j}]")
        texts.append(part["text"])
    return "".join(texts)


def _prompt(value: Any) -> Any:
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], str):
            return value[0]
        raise OpenAIError(400, "prompt must be one string (no lists of prompts or token ids)", "unsupported_value",
                          "prompt")
    return value


def _openai_field(field: str | None, names: dict[str, str]) -> str | None:
    if field is None:
        return None
    if field in names:
        return names[field]
    return field.removeprefix("params.")
