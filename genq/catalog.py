"""The served models as the API shows them: name, source kind, context length, generation defaults.

Everything here is read from the model's files (GGUF metadata, config.json, generation_config.json, the
tokenizer) once per process and cached: the API never loads weights (genq/model_limits.py).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from genq.model_limits import count_prompt_tokens, model_shape, read_json_object
from genq.settings import ModelSpec, Settings
from models.params import GenerationParams, ModelLimits, check_fits, check_for_model

log = logging.getLogger(__name__)

# generation_config.json keys that are generation parameters (others, e.g. token ids, are the model's own)
_GENERATION_KEYS = {f for f in GenerationParams.__dataclass_fields__}


@dataclass
class ServedModel:
    spec: ModelSpec
    max_len: int = 1 << 20  # GENQ_MAX_LEN: the most positions the engine gives one job (default: the model's own)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def context_length(self) -> int:
        """The most tokens (prompt + new) one job may have: what the engine enforces, GENQ_MAX_LEN capped by
        the model's own context length."""
        _, own = model_shape(self.spec.kind, self.spec.source)
        return min(own, self.max_len) if own else self.max_len

    @property
    def vocab_size(self) -> int | None:
        """The network's vocabulary size (token ids and top_k stay within it); None if the files cannot tell."""
        return model_shape(self.spec.kind, self.spec.source)[0]

    @property
    def limits(self) -> ModelLimits:
        return ModelLimits(vocab_size=self.vocab_size, context_length=self.context_length)

    def check_request(self, params: GenerationParams, job_input: Mapping[str, Any]) -> int | None:
        """Refuse what the engine would refuse at the worker: a parameter past this model's bounds (ParamError),
        messages or a prompt it cannot encode (PromptError), or a prompt + max_new_tokens over the context
        (ContextOverflow). The prompt is counted with the model's own tokenizer and chat template; returns
        that count (None when the model's files have no tokenizer to count with)."""
        check_for_model(params, self.limits)
        n = count_prompt_tokens(self.spec.source, job_input)
        if n is not None:
            field = "messages" if "messages" in job_input else "prompt"
            check_fits(n, params.max_new_tokens, self.context_length, field)
        return n

    @cached_property
    def generation_defaults(self) -> dict[str, Any]:
        """The model's own generation config (HF `generation_config.json`), limited to known parameters."""
        if self.spec.kind != "hf":
            return {}
        path = self.spec.source / "generation_config.json"
        if not path.is_file():
            return {}
        try:
            config = read_json_object(path)
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable %s: %s", path, e)
            return {}
        return {k: v for k, v in config.items() if k in _GENERATION_KEYS and v is not None}


class Catalog:
    """The models this service serves, by name."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._models = {name: ServedModel(spec, settings.max_len) for name, spec in settings.models.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def get(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    @property
    def default(self) -> ServedModel:
        return self._models[self.settings.default_model]

    def all(self) -> list[ServedModel]:
        return [self._models[n] for n in sorted(self._models)]

    def resolve_params(self, model: ServedModel, request: Mapping[str, Any] | None) -> GenerationParams:
        """Request over the model's generation config over the service's defaults (raises ParamError)."""
        return GenerationParams.resolve(request, model.generation_defaults, self.settings.generation_defaults)

