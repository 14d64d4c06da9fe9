"""What a request must be to join a batch, checked by `Engine.submit` in the submitter's thread.

Everything that could make a step raise because of one request's own data is refused here, so it never
joins a batch: parameters past their bounds (checked again, whatever built the record) or past the model's
(models.params.check_for_model), a prompt that cannot be encoded or encodes to ids outside the network's
vocabulary, a prompt plus max_new_tokens over max_len, a priority the scheduler cannot order.
Plain Python, no torch.
"""
from __future__ import annotations

from typing import Any

from models.echo import clip
from models.engine.types import GenerationRequest, InvalidRequest, PromptTooLong
from models.params import ContextOverflow, GenerationParams, ModelLimits, ParamError, check_fits, check_for_model
from models.prompting import PromptError, prompt_ids


def encode_request(tokenizer: Any, chat_template: Any, request: GenerationRequest) -> list[int]:
    """The request's prompt token ids (models/prompting.py); raises InvalidRequest naming the field."""
    try:
        return prompt_ids(tokenizer, chat_template, request.prompt, request.messages)
    except PromptError as e:
        raise InvalidRequest(clip(str(e))) from None
    except (TypeError, ValueError) as e:  # e.g. a prompt that is not a string, in a record made by hand
        raise InvalidRequest(clip(f"prompt: {type(e).__name__}: {e}")) from None


def check_request(request: GenerationRequest, prompt_ids: list[int], limits: ModelLimits) -> None:
    """Raise InvalidRequest or PromptTooLong (messages name the field) unless `request`, whose prompt encodes
    to `prompt_ids`, can run within `limits` (the network's vocabulary, the engine's max_len)."""
    if isinstance(request.priority, bool) or not isinstance(request.priority, int):
        raise InvalidRequest("priority must be an integer")  # the scheduler orders waiting requests by it
    params = request.params
    if not isinstance(params, GenerationParams):
        raise InvalidRequest(f"params must be GenerationParams, not {type(params).__name__}")
    try:
        params.validate()  # again: a record may have been changed, or made without its constructor
        check_for_model(params, limits)
        field = "messages" if request.messages is not None else "prompt"
        check_fits(len(prompt_ids), params.max_new_tokens, limits.context_length, field)
    except ContextOverflow as e:
        raise PromptTooLong(clip(str(e))) from None
    except ParamError as e:  # validate() names bare fields, check_for_model "params.<name>"
        raise InvalidRequest(clip(str(e) if e.field.startswith("params") else f"params.{e}")) from None
    vocab = limits.vocab_size
    if vocab is not None and (min(prompt_ids) < 0 or max(prompt_ids) >= vocab):
        raise InvalidRequest(f"prompt: it encodes to token ids outside the network's vocabulary of {vocab}")
