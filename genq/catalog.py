"""The served models as the API shows them: name, source kind, context length, generation defaults.

Everything here is read from small files (a GGUF header, config.json, generation_config.json) once per
process and cached: the API never loads weights.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

from genq.config import ModelSpec, Settings
from genq.gguf_header import GGUFHeaderError, read_metadata
from models.params import GenerationParams

log = logging.getLogger(__name__)

# generation_config.json keys that are generation parameters (others, e.g. token ids, are the model's own)
_GENERATION_KEYS = {f for f in GenerationParams.__dataclass_fields__}


@dataclass
class ServedModel:
    spec: ModelSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def context_length(self) -> int | None:
        """The model's trained context length, if its files say so cheaply."""
        try:
            if self.spec.kind == "gguf":
                meta = read_metadata(self.spec.source, {"general.architecture"})
                arch = meta.get("general.architecture", "llama")
                value = read_metadata(self.spec.source, {f"{arch}.context_length"}).get(f"{arch}.context_length")
            else:
                value = _read_json(self.spec.source / "config.json").get("max_position_embeddings")
        except (OSError, GGUFHeaderError, ValueError) as e:
            log.warning("cannot read the context length of %s: %s", self.name, e)
            return None
        return int(value) if isinstance(value, int) else None

    @cached_property
    def generation_defaults(self) -> dict[str, Any]:
        """The model's own generation config (HF `generation_config.json`), limited to known parameters."""
        if self.spec.kind != "hf":
            return {}
        path = self.spec.source / "generation_config.json"
        if not path.is_file():
            return {}
        try:
            config = _read_json(path)
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable %s: %s", path, e)
            return {}
        return {k: v for k, v in config.items() if k in _GENERATION_KEYS and v is not None}


class Catalog:
    """The models this service serves, by name."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._models = {name: ServedModel(spec) for name, spec in settings.models.items()}

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


def _read_json(path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data
