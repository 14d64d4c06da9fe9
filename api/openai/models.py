"""GET /openai/v1/models and /openai/v1/models/{id}: the served models as OpenAI model objects."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.openai.errors import OpenAIError
from api.services import services
from genq.catalog import ServedModel
from models.echo import short

bp = Blueprint("openai_models", __name__)


def model_object(model: ServedModel) -> dict[str, object]:
    # `created` is unknown for a served file; 0 keeps the field's type
    return {"id": model.name, "object": "model", "created": 0, "owned_by": "genq"}


@bp.get("/models")
def list_models() -> Response:
    return jsonify({"object": "list", "data": [model_object(m) for m in services().catalog.all()]})


@bp.get("/models/<model_id>")
def get_model(model_id: str) -> Response:
    model = services().catalog.get(model_id)
    if model is None:
        raise OpenAIError(404, f"The model {short(model_id)} does not exist", "model_not_found", "model")
    return jsonify(model_object(model))
