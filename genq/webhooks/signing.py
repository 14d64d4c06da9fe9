"""Standard Webhooks signatures: secrets, the signature header, and the three signed headers.

A secret is shown to clients as `whsec_` + base64(secret bytes). A message is signed as
`v1,` + base64(HMAC-SHA256(secret bytes, f"{msg_id}.{timestamp}.{body}")); while a secret is being
rotated the message is signed with every live secret and the signatures are sent space-separated,
so a receiver holding either the old or the new secret verifies it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets as _secrets
import time
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
# The specification asks for secrets of 24 to 64 bytes; we generate 32.
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64
SECRET_BYTES = 32

# The message id is part of the signed content and travels as a header: keep it to characters that
# need no escaping anywhere (and never the "." that separates the signed fields, nor a space).
_MSG_ID = re.compile(r"[A-Za-z0-9_\-]{1,255}")


def generate_secret() -> str:
    """A new random signing secret, as clients see it: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def parse_secret(secret: str) -> bytes:
    """The key bytes of a `whsec_...` secret; ValueError naming what is wrong otherwise."""
    if not isinstance(secret, str):
        raise ValueError(f"webhook secret must be a string, not {type(secret).__name__}")
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX):]
    # Accept unpadded base64 too (receivers' libraries do); padding is restored before strict decoding.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"webhook secret is not valid base64 after {SECRET_PREFIX!r}: {e}") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(
            f"webhook secret must decode to {SECRET_MIN_BYTES}..{SECRET_MAX_BYTES} bytes, got {len(key)}"
        )
    return key


def sign(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """The `webhook-signature` header value: one `v1,<base64>` per secret, space-separated, in order."""
    _check_msg_id(msg_id)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError(f"timestamp must be a non-negative integer of unix seconds, got {timestamp!r}")
    if not isinstance(body, (bytes, bytearray)):
        raise ValueError(f"body must be bytes, not {type(body).__name__}")
    if isinstance(secrets, str) or not secrets:
        raise ValueError("secrets must be a non-empty list of whsec_ secrets")
    signed = f"{msg_id}.{timestamp}.".encode("ascii") + bytes(body)
    return " ".join(
        "v1," + base64.b64encode(hmac.new(parse_secret(s), signed, hashlib.sha256).digest()).decode("ascii")
        for s in secrets
    )


def signed_headers(msg_id: str, body: bytes, secrets: Sequence[str], now: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt of message `msg_id`.

    `now` is the attempt's time in unix seconds (default: the clock). Each retry is signed afresh with
    its own timestamp, since receivers refuse timestamps more than a few minutes old; the id stays.
    """
    timestamp = math.floor(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(msg_id, timestamp, body, secrets),
    }


def _check_msg_id(msg_id: str) -> None:
    if not isinstance(msg_id, str) or not _MSG_ID.fullmatch(msg_id):
        raise ValueError(f"message id must be 1..255 characters of [A-Za-z0-9_-], got {msg_id!r}")
