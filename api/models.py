"""/v1/models: the served models."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.services import services
from models.params import GenerationParams

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
def list_models() -> Response:
    svc = services()
    data = []
    for model in svc.catalog.all():
        defaults = GenerationParams.resolve(None, model.generation_defaults, svc.settings.generation_defaults)
        data.append(
            {
                "name": model.name,
                "object": "model",
                "default": model.name == svc.settings.default_model,
                "source": model.spec.kind,
                "quantization": model.spec.quantization,
                "context_length": model.context_length,
                "vocab_size": model.vocab_size,
                "generation_defaults": defaults.to_dict(),
            }
        )
    return jsonify({"object": "list", "data": data})
