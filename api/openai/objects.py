"""genq jobs as OpenAI response objects: `chat.completion`, `text_completion`, their stream chunks, usage.

A job from `messages` is a chat completion, one from `prompt` a text completion: the job alone says which, so a
batch's output file is written from its jobs. The object's `id` is the job's id, so `GET /v1/jobs/{id}` shows
the same request as genq sees it.
"""
from __future__ import annotations

from typing import Any

from genq.store.schema import Job

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "canceled": "stop"}


def is_chat(job: Job) -> bool:
    return "messages" in (job.input or {})


def created(job: Job) -> int:
    return int(job.created_at.timestamp())


def usage(job: Job) -> dict[str, int]:
    prompt, completion = job.prompt_tokens or 0, job.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(job: Job) -> str:
    return FINISH_REASONS.get(job.finish_reason or "", "stop")


def completion_object(job: Job) -> dict[str, Any]:
    """The finished job as the object its endpoint answers."""
    return chat_completion(job) if is_chat(job) else text_completion(job)


def chat_completion(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "object": "chat.completion", "created": created(job), "model": job.model,
        "system_fingerprint": None,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": job.output_text or "", "refusal": None},
            "logprobs": chat_logprobs(job.logprobs) if job.logprobs is not None else None,
            "finish_reason": finish_reason(job),
        }],
        "usage": usage(job),
    }


def text_completion(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "object": "text_completion", "created": created(job), "model": job.model,
        "system_fingerprint": None,
        "choices": [{
            "index": 0, "text": job.output_text or "",
            "logprobs": completion_logprobs(job.logprobs) if job.logprobs is not None else None,
            "finish_reason": finish_reason(job),
        }],
        "usage": usage(job),
    }


def chat_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """genq's per-token entries ({token, token_id, logprob, top}) in chat's `logprobs.content` form."""
    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**one(e["token"], e["logprob"]), "top_logprobs": [one(t["token"], t["logprob"])
                                                                           for t in e["top"]]}
                        for e in entries],
            "refusal": None}


def completion_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The legacy completions form: parallel lists of tokens, their logprobs, the alternatives and text offsets."""
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top"]} for e in entries],
            "text_offset": offsets}


# ---- stream chunks ----


def chunk(job: Job, *, text: str | None = None, role: bool = False, finish: str | None = None,
          logprobs: list[dict[str, Any]] | None = None, include_usage: bool = False) -> dict[str, Any]:
    """One chunk of the job's stream: a piece of text, the opening role, or the finish reason."""
    if is_chat(job):
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None or role:
            delta["content"] = text or ""
        choice: dict[str, Any] = {"index": 0, "delta": delta,
                                  "logprobs": chat_logprobs(logprobs) if logprobs is not None else None,
                                  "finish_reason": finish}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "",
                  "logprobs": completion_logprobs(logprobs) if logprobs is not None else None,
                  "finish_reason": finish}
        kind = "text_completion"
    out: dict[str, Any] = {"id": job.id, "object": kind, "created": created(job), "model": job.model,
                           "system_fingerprint": None, "choices": [choice]}
    if include_usage:
        out["usage"] = None  # every chunk but the last (OpenAI's stream_options.include_usage)
    return out


def usage_chunk(job: Job) -> dict[str, Any]:
    """The last chunk when `stream_options.include_usage` asks: no choices, the usage."""
    kind = "chat.completion.chunk" if is_chat(job) else "text_completion"
    return {"id": job.id, "object": kind, "created": created(job), "model": job.model, "system_fingerprint": None,
            "choices": [], "usage": usage(job)}
