"""Signatures follow the Standard Webhooks specification, checked with its reference vector and library."""
import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from genq.webhooks.signing import generate_secret, parse_secret, sign, signed_headers

# The specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_specification_test_vector():
    assert sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, [VECTOR_SECRET]) == VECTOR_SIGNATURE


def test_generated_secret_is_whsec_prefixed_base64_of_32_random_bytes():
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[len("whsec_"):], validate=True)) == 32
    assert parse_secret(secret) == base64.b64decode(secret[len("whsec_"):])
    assert generate_secret() != secret


def test_parse_secret_accepts_unpadded_base64():
    secret = generate_secret()
    assert parse_secret(secret.rstrip("=")) == parse_secret(secret)


@pytest.mark.parametrize(
    "bad, words",
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_not base64 at all!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "24..64 bytes, got 16"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24..64 bytes, got 65"),
        ("whsec_", "24..64 bytes, got 0"),
        (b"whsec_abc", "must be a string"),
    ],
)
def test_parse_secret_names_what_is_wrong(bad, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.").replace("(", r"\(")):
        parse_secret(bad)


def test_standardwebhooks_library_verifies_signed_headers():
    secret = generate_secret()
    body = b'{"id":"job_1","status":"succeeded"}'
    headers = signed_headers("msg_job_1_completed", body, [secret])
    assert Webhook(secret).verify(body, headers) == {"id": "job_1", "status": "succeeded"}


def test_rotation_signs_with_every_secret_and_either_verifies():
    old, new, stranger = generate_secret(), generate_secret(), generate_secret()
    body = b'{"id":"job_1"}'
    headers = signed_headers("msg_1", body, [old, new])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)


def test_altered_body_does_not_verify():
    secret = generate_secret()
    headers = signed_headers("msg_1", b'{"n":1}', [secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"n":2}', headers)


def test_signed_headers_carry_id_and_floored_timestamp():
    secret = generate_secret()
    now = time.time() + 0.75
    headers = signed_headers("msg_abc", b"{}", [secret], now=now)
    assert headers["webhook-id"] == "msg_abc"
    assert headers["webhook-timestamp"] == str(int(now))
    assert headers["webhook-signature"] == sign("msg_abc", int(now), b"{}", [secret])


@pytest.mark.parametrize(
    "msg_id, timestamp, body, secrets, words",
    [
        ("msg.1", 1, b"{}", None, "message id"),
        ("msg 1", 1, b"{}", None, "message id"),
        ("", 1, b"{}", None, "message id"),
        ("msg_1", -1, b"{}", None, "timestamp"),
        ("msg_1", 1.5, b"{}", None, "timestamp"),
        ("msg_1", 1, "{}", None, "body must be bytes"),
        ("msg_1", 1, b"{}", [], "non-empty list"),
        ("msg_1", 1, b"{}", "whsec_x", "non-empty list"),
    ],
)
def test_sign_refuses_bad_arguments(msg_id, timestamp, body, secrets, words):
    with pytest.raises(ValueError, match=words):
        sign(msg_id, timestamp, body, [generate_secret()] if secrets is None else secrets)
