"""The dashboard's one blueprint, which every page module adds its routes to (api/admin/__init__.py wires it)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates", static_folder="static",
               static_url_path="/static")
