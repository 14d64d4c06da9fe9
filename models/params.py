"""Generation parameters: one validated, immutable record per job.

Names follow transformers' `GenerationConfig`. A job's parameters are resolved once, when it is
submitted: the request's values over the model's generation config over the service's defaults.
The resolved record is stored on the job, so what ran is always visible (no silent 20-token limit).
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from models.echo import short

# A job finishes for exactly one of these reasons.
FINISH_REASONS = ("eos", "length", "stop", "canceled")

# The service's own defaults, used where neither the request nor the model's generation config
# says otherwise. They match GenerationConfig's defaults except max_new_tokens (20 there).
SERVICE_DEFAULTS: dict[str, Any] = {"max_new_tokens": 256}

MAX_PARAM_NAME = 64  # an unknown parameter's name longer than this is quoted short in the error
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 256  # each stop string; they are searched for after every token
MAX_STOP_TOKEN_IDS = 256
MAX_LOGPROBS = 20
SEED_MAX = 2**63 - 1  # a seed fits a signed 64-bit integer
# Ceilings that hold whatever the model (the model's own, lower ones: ModelLimits below). Every integer
# parameter is thereby far inside int64, which the sampler's tensors hold them in.
MAX_CONTEXT = 1 << 20  # positions of one sequence (GENQ_MAX_LEN's ceiling)
MAX_VOCAB = 1 << 24  # token ids (and top_k) stay below this
MAX_TEMPERATURE = 100.0  # beyond it every row is uniform to float precision
MAX_REPETITION_PENALTY = 10.0


@dataclass(frozen=True)
class Bound:
    """The type and range one scalar parameter must have: `lo`..`hi` inclusive, `lo` exclusive if `lo_open`.

    Validation below and the API's OpenAPI document (api/openapi_schemas.py) both read BOUNDS, so the
    document cannot drift from what is enforced.
    """

    kind: str  # "int" | "float" | "bool"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    nullable: bool = False  # None is allowed (and means "off" / "draw one")


BOUNDS: dict[str, Bound] = {
    "max_new_tokens": Bound("int", lo=1, hi=MAX_CONTEXT),
    "min_new_tokens": Bound("int", lo=0, hi=MAX_CONTEXT),
    "do_sample": Bound("bool"),
    "temperature": Bound("float", lo=0.0, hi=MAX_TEMPERATURE, lo_open=True),
    "top_k": Bound("int", lo=0, hi=MAX_VOCAB),
    "top_p": Bound("float", lo=0.0, hi=1.0, lo_open=True),
    "min_p": Bound("float", lo=0.0, hi=1.0),
    "repetition_penalty": Bound("float", lo=0.0, hi=MAX_REPETITION_PENALTY, lo_open=True),
    "presence_penalty": Bound("float", lo=-2.0, hi=2.0),
    "frequency_penalty": Bound("float", lo=-2.0, hi=2.0),
    "no_repeat_ngram_size": Bound("int", lo=0, hi=MAX_CONTEXT),
    "ignore_eos": Bound("bool"),
    "seed": Bound("int", lo=0, hi=SEED_MAX, nullable=True),
    "logprobs": Bound("int", lo=0, hi=MAX_LOGPROBS, nullable=True),
}


class ParamError(ValueError):
    """A generation parameter is invalid; `field` names it (as the client spelled it)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50  # 0 disables
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: int | None = None  # None: off; 0: the chosen token's; N: also the top N alternatives

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ParamError unless every field is within its bound (construction does this; the engine does it
        again at submit, for a record that did not come through the constructor)."""
        for name, bound in BOUNDS.items():
            if bound.nullable and getattr(self, name) is None:
                continue
            if bound.kind == "int":
                _int(self, name, lo=bound.lo, hi=bound.hi)
            elif bound.kind == "float":
                _float(self, name, lo=bound.lo, hi=bound.hi, lo_open=bound.lo_open)
            else:
                _bool(self, name)
            if name == "min_new_tokens" and self.min_new_tokens > self.max_new_tokens:
                raise ParamError("min_new_tokens", "must not exceed max_new_tokens")
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise ParamError("stop", "must be a list of non-empty strings")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise ParamError("stop", f"at most {MAX_STOP_STRINGS} stop strings")
        if any(len(s) > MAX_STOP_STRING_CHARS for s in self.stop):
            raise ParamError("stop", f"each stop string has at most {MAX_STOP_STRING_CHARS} characters")
        if not isinstance(self.stop_token_ids, tuple) or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < MAX_VOCAB for t in self.stop_token_ids
        ):
            raise ParamError("stop_token_ids", f"must be a list of integers in [0, {MAX_VOCAB})")
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            raise ParamError("stop_token_ids", f"at most {MAX_STOP_TOKEN_IDS} stop token ids")

    @classmethod
    def resolve(
        cls,
        request: Mapping[str, Any] | None,
        model_defaults: Mapping[str, Any] | None = None,
        service_defaults: Mapping[str, Any] | None = None,
    ) -> GenerationParams:
        """Request over model generation config over service defaults; unknown request keys are refused.

        A sampled job without a seed gets one drawn here, so that its run can be repeated.
        """
        if request is not None and not isinstance(request, Mapping):
            raise ParamError("params", "must be an object")
        known = {f.name for f in fields(cls)}
        for key in request or {}:
            if key not in known:
                name = key if isinstance(key, str) and len(key) <= MAX_PARAM_NAME else short(key)
                raise ParamError(f"params.{name}", "unknown generation parameter")
        merged: dict[str, Any] = {}
        for source in (SERVICE_DEFAULTS, service_defaults or {}, model_defaults or {}):
            merged.update({k: v for k, v in source.items() if k in known and v is not None})
        merged.update(request or {})
        for key in ("stop", "stop_token_ids"):
            value = merged.get(key)
            if isinstance(value, str) and key == "stop":
                value = [value]
            if isinstance(value, list):
                merged[key] = tuple(value)
            elif value is not None and not isinstance(value, tuple):
                raise ParamError(f"params.{key}", "must be a list")
        if merged.get("do_sample") is True and merged.get("seed") is None:
            merged["seed"] = random.SystemRandom().randrange(2**31)
        try:
            return cls(**merged)
        except ParamError as e:
            raise ParamError(f"params.{e.field}", e.message) from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        d["stop_token_ids"] = list(self.stop_token_ids)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationParams:
        """Rebuild a stored (already resolved) record."""
        d = dict(d)
        d["stop"] = tuple(d.get("stop") or ())
        d["stop_token_ids"] = tuple(d.get("stop_token_ids") or ())
        return cls(**d)


@dataclass(frozen=True)
class ModelLimits:
    """What one served model can take: token ids below `vocab_size` (None: unknown, unchecked) and at most
    `context_length` positions per sequence (prompt + new tokens), the length the engine enforces."""

    vocab_size: int | None
    context_length: int


class ContextOverflow(ParamError):
    """The prompt and max_new_tokens together do not fit the model's context."""


def check_for_model(params: GenerationParams, limits: ModelLimits) -> None:
    """Raise ParamError (field "params.<name>") where `params` exceeds a bound that depends on the model.

    Checked where the model is known: by the API against the served model's catalog entry, and by the
    engine at submit against the network it runs.
    """
    vocab, context = limits.vocab_size, limits.context_length
    if vocab is not None:
        if params.do_sample and params.top_k > vocab:  # (greedy decoding does not use it: a default 50 may stay)
            raise ParamError("params.top_k", f"must be <= {vocab} (the model's vocabulary size)")
        if params.logprobs is not None and params.logprobs > vocab:
            raise ParamError("params.logprobs", f"must be <= {vocab} (the model's vocabulary size)")
        if any(t >= vocab for t in params.stop_token_ids):
            raise ParamError("params.stop_token_ids", f"must be token ids below {vocab} (the model's vocabulary size)")
    if params.no_repeat_ngram_size > context:
        raise ParamError("params.no_repeat_ngram_size", f"must be <= {context} (the model's context length)")
    check_fits(1, params.max_new_tokens, context)  # any prompt has at least one token


def check_fits(prompt_tokens: int, max_new_tokens: int, context_length: int, prompt_field: str = "prompt") -> None:
    """Raise ContextOverflow unless a prompt of `prompt_tokens` tokens plus `max_new_tokens` fits the context.

    The field is the prompt's when the prompt alone leaves no room for a token, else params.max_new_tokens.
    """
    if prompt_tokens + max_new_tokens <= context_length:
        return
    if prompt_tokens >= context_length:
        raise ContextOverflow(prompt_field, f"the prompt is {prompt_tokens} tokens; the model's context length is "
                                            f"{context_length}, and at least one new token must fit")
    raise ContextOverflow("params.max_new_tokens",
                          f"must be <= {context_length - prompt_tokens} for this prompt of {prompt_tokens} tokens "
                          f"(the model's context length is {context_length})")


def _int(p: GenerationParams, name: str, lo: float | None = None, hi: float | None = None) -> None:
    v = getattr(p, name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ParamError(name, "must be an integer")
    if lo is not None and v < lo:
        raise ParamError(name, f"must be >= {lo}")
    if hi is not None and v > hi:
        raise ParamError(name, f"must be <= {hi}")


def _float(
    p: GenerationParams, name: str, lo: float | None, hi: float | None = None, lo_open: bool = False
) -> None:
    v = getattr(p, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ParamError(name, "must be a finite number")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ParamError(name, f"must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and v > hi:
        raise ParamError(name, f"must be <= {hi}")
    object.__setattr__(p, name, float(v))


def _bool(p: GenerationParams, name: str) -> None:
    if not isinstance(getattr(p, name), bool):
        raise ParamError(name, "must be true or false")
