"""What goes into the engine and what comes out: plain records, no torch."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.params import GenerationParams


class EngineError(Exception):
    """A request the engine cannot run; `code` is machine-readable (stored on the job)."""

    code = "engine_error"


class PromptTooLong(EngineError):
    code = "prompt_too_long"


class InvalidRequest(EngineError):
    """The request is outside what the engine's model can take (a parameter past the model's bounds, a prompt
    that cannot be rendered or holds ids outside the vocabulary); refused at submit, so it never joins a batch."""

    code = "invalid_request"


class EngineStopped(EngineError):
    code = "engine_stopped"


@dataclass
class GenerationRequest:
    request_id: str
    params: GenerationParams
    prompt: str | None = None  # raw text, tokenized as is
    messages: list[dict[str, Any]] | None = None  # chat messages, rendered with the model's template
    priority: int = 0  # higher is admitted to the batch first; equal priorities keep arrival order


@dataclass
class GenerationResult:
    text: str
    finish_reason: str  # one of models.params.FINISH_REASONS
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int] = field(default_factory=list)
    # one entry per generated token when params.logprobs is set:
    # {"token": str, "token_id": int, "logprob": float, "top": [{"token", "token_id", "logprob"}, ...]}
    logprobs: list[dict[str, Any]] | None = None


@dataclass
class EngineEvent:
    """Emitted on the engine thread; listeners must return quickly."""

    kind: str  # "started" (joined the batch), "delta" (new text), "finished"
    request_id: str
    text: str = ""  # the new text, for "delta"
    result: GenerationResult | None = None  # for "finished"
    error: str | None = None  # for "finished" when the request failed (result is None then)


EventListener = Callable[[EngineEvent], None]
