"""/v1/webhooks/secret: the signing secret receivers verify with, and its rotation; each API key has its own
(the deliveries of its jobs are signed with it)."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.auth import current_key_id
from api.services import services
from genq.serialize import iso
from genq.webhooks.secret_store import SecretInfo

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@bp.get("/secret")
def get_secret() -> Response:
    return jsonify(_secret_object(services().secrets.signing(owner=current_key_id())))


@bp.post("/secret/rotate")
def rotate_secret() -> Response:
    """A new secret becomes current; the previous one keeps signing too until the grace period ends."""
    svc = services()
    svc.secrets.rotate(current_key_id())
    return jsonify(_secret_object(svc.secrets.signing(owner=current_key_id())))


def _secret_object(signing: list[SecretInfo]) -> dict:
    current = signing[0]
    return {
        "object": "webhook_secret",
        "secret": current.secret,
        "created_at": iso(current.created_at),
        "grace_period_s": int(services().secrets.grace.total_seconds()),
        # older secrets messages are still signed with (their values were shown when they were current)
        "previous": [{"created_at": iso(s.created_at), "signs_until": iso(s.signs_until)} for s in signing[1:]],
    }
