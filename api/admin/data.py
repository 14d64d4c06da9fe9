"""The JSON the dashboard's charts refresh from (same session and role rules as the pages)."""
from __future__ import annotations

from flask import Response, jsonify

from api.admin.blueprint import bp
from api.admin.overview import overview_data


@bp.get("/data/overview.json")
def overview_json() -> Response:
    return jsonify(overview_data())
