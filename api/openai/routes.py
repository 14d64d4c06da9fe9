"""The /openai/v1 blueprint: every OpenAI-compatible resource nested in it, every error in OpenAI's shape."""
from __future__ import annotations

from flask import Blueprint, Flask

from api.openai import batches, completions, errors, files, models

PREFIX = "/openai/v1"

bp = Blueprint("openai", __name__, url_prefix=PREFIX)
for _module in (models, completions, files, batches):
    bp.register_blueprint(_module.bp)
errors.register(bp)


def register(app: Flask) -> None:
    """Mount the surface on `app` (after the app's own error handlers: its routing errors take OpenAI's shape
    under the prefix)."""
    app.register_blueprint(bp)
    errors.register_app(app, PREFIX)
