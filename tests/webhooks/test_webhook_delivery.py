"""One delivery attempt against a real receiver on 127.0.0.1 that verifies with `standardwebhooks`."""
import json
import shutil
import socket
import ssl
import subprocess

import pytest
from standardwebhooks.webhooks import Webhook

from genq.webhooks.deliver import EXCERPT_BYTES, USER_AGENT, deliver
from genq.webhooks.events import JOB_COMPLETED, event_body, message_id
from genq.webhooks.retry import RetryPolicy
from genq.webhooks.signing import generate_secret
from genq.webhooks.urls import AllowList

from .receiver import Receiver, Reply

JOB = {"id": "job_1", "status": "succeeded", "output": {"text": "Paris."}}
BODY = event_body(JOB)
MSG_ID = message_id("job_1", JOB_COMPLETED)


def test_delivery_is_verified_by_a_standard_webhooks_receiver(receiver, allow_local):
    secret = generate_secret()
    attempt = deliver(receiver.url(), BODY, MSG_ID, [secret], allow_local)
    assert (attempt.outcome, attempt.status_code, attempt.error) == ("succeeded", 200, None)
    assert attempt.number == 1 and attempt.next_retry_at is None and attempt.response_excerpt == "ok"
    [request] = receiver.received
    assert Webhook(secret).verify(request.body, request.headers) == JOB
    assert request.headers["webhook-id"] == MSG_ID
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["content-type"] == "application/json"


def test_during_rotation_old_and_new_secrets_both_verify(receiver, allow_local):
    old, new = generate_secret(), generate_secret()
    assert deliver(receiver.url(), BODY, MSG_ID, [old, new], allow_local).outcome == "succeeded"
    [request] = receiver.received
    assert Webhook(old).verify(request.body, request.headers) == JOB
    assert Webhook(new).verify(request.body, request.headers) == JOB


def test_retries_keep_the_webhook_id_and_each_attempt_verifies(receiver, allow_local):
    secret = generate_secret()
    receiver.will_reply(Reply(503), Reply(500))
    attempts = []
    for number in range(1, 9):  # the caller's loop, without the waiting
        attempts.append(deliver(receiver.url(), BODY, MSG_ID, [secret], allow_local, attempt=number))
        if attempts[-1].outcome != "retry":
            break
    assert [(a.number, a.outcome, a.status_code) for a in attempts] == [
        (1, "retry", 503),
        (2, "retry", 500),
        (3, "succeeded", 200),
    ]
    assert {r.headers["webhook-id"] for r in receiver.received} == {MSG_ID}
    for request in receiver.received:
        Webhook(secret).verify(request.body, request.headers)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_5xx_and_429_are_retried_on_schedule(receiver, allow_local, status):
    receiver.will_reply(Reply(status, body=b"busy"))
    attempt = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local, attempt=2)
    assert (attempt.outcome, attempt.status_code, attempt.response_excerpt) == ("retry", status, "busy")
    wait = (attempt.next_retry_at - attempt.started_at).total_seconds()
    assert 300 <= wait < 305  # the second retry waits 5 minutes


def test_retry_after_from_the_receiver_is_honoured(receiver, allow_local):
    receiver.will_reply(Reply(429, headers={"Retry-After": "120"}))
    attempt = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local)
    assert attempt.outcome == "retry"
    assert 120 <= (attempt.next_retry_at - attempt.started_at).total_seconds() < 125


def test_retryable_failure_without_retries_left_is_final(receiver, allow_local):
    receiver.will_reply(Reply(503))
    attempt = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local, attempt=8)
    assert (attempt.outcome, attempt.status_code, attempt.next_retry_at) == ("failed", 503, None)


def test_custom_policy_decides_the_wait(receiver, allow_local):
    receiver.will_reply(Reply(500))
    policy = RetryPolicy(schedule=(42.0,))
    attempt = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local, policy=policy)
    assert 42 <= (attempt.next_retry_at - attempt.started_at).total_seconds() < 47


def test_410_gone_stops(receiver, allow_local):
    receiver.will_reply(Reply(410))
    attempt = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local)
    assert (attempt.outcome, attempt.status_code, attempt.next_retry_at) == ("gone", 410, None)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_4xx_are_final_failures(receiver, allow_local, status):
    receiver.will_reply(Reply(status))
    attempt = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local)
    assert (attempt.outcome, attempt.status_code, attempt.next_retry_at) == ("failed", status, None)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(receiver, allow_local, status):
    receiver.will_reply(Reply(status, headers={"Location": receiver.url("/elsewhere")}))
    attempt = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local)
    assert (attempt.outcome, attempt.status_code) == ("failed", status)
    assert [r.path for r in receiver.received] == ["/hook"]


def test_read_timeout_is_retried(receiver, allow_local):
    receiver.will_reply(Reply(200, delay_s=1.0))
    attempt = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local, timeout=(2.0, 0.2))
    assert (attempt.outcome, attempt.status_code) == ("retry", None)
    assert attempt.error.startswith("timeout: ")
    assert 0.2 <= attempt.duration_s < 1.0


def test_connection_refused_is_retried(closed_port, allow_local):
    attempt = deliver(f"http://127.0.0.1:{closed_port}/hook", BODY, MSG_ID, [generate_secret()], allow_local)
    assert (attempt.outcome, attempt.status_code) == ("retry", None)
    assert attempt.error.startswith("connection_error: ")


def test_response_excerpt_is_capped(receiver, allow_local):
    receiver.will_reply(Reply(500, body=b"e" * 200_000))
    attempt = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local)
    assert attempt.response_excerpt == "e" * EXCERPT_BYTES


def test_forbidden_name_is_refused_at_delivery_without_contacting_it(receiver):
    # `localhost` passes the syntax check; only resolving it at delivery shows it is loopback.
    attempt = deliver(receiver.url(host="localhost"), BODY, MSG_ID, [generate_secret()], AllowList())
    assert (attempt.outcome, attempt.status_code) == ("failed", None)
    assert attempt.error.startswith("webhook_url_forbidden: ")
    assert receiver.received == []


def test_forbidden_address_literal_is_refused_at_delivery(receiver):
    attempt = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], AllowList())
    assert attempt.outcome == "failed" and attempt.error.startswith("webhook_url_forbidden: ")
    assert receiver.received == []


def test_invalid_url_is_a_final_failure(allow_local):
    attempt = deliver("ftp://127.0.0.1/hook", BODY, MSG_ID, [generate_secret()], allow_local)
    assert attempt.outcome == "failed" and attempt.error.startswith("webhook_url_invalid: ")


def _resolver(monkeypatch, name, answers):
    """Make the system resolver answer `name` with `answers[i]` on its i-th lookup (the last one after
    that); other names resolve normally. Returns the list of lookups of `name` made."""
    real = socket.getaddrinfo
    lookups = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return real(answers[min(len(lookups), len(answers)) - 1], port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_dns_rebinding_to_a_forbidden_address_is_caught_at_delivery(receiver, monkeypatch):
    from genq.webhooks.urls import validate_webhook_url

    _resolver(monkeypatch, "rebind.test", ["93.184.216.34", "127.0.0.1"])
    url = f"http://rebind.test:{receiver.port}/hook"
    validate_webhook_url(url, AllowList())  # at submission the name looked public
    attempt = deliver(url, BODY, MSG_ID, [generate_secret()], AllowList())
    assert attempt.outcome == "failed" and "resolves to 127.0.0.1" in attempt.error
    assert receiver.received == []


def test_delivery_connects_to_the_address_it_checked_without_a_second_lookup(receiver, allow_local, monkeypatch):
    # A second lookup would get 10.9.9.9: forbidden, and unreachable from here.
    lookups = _resolver(monkeypatch, "pinned.test", ["127.0.0.1", "10.9.9.9"])
    attempt = deliver(f"http://pinned.test:{receiver.port}/hook", BODY, MSG_ID, [generate_secret()], allow_local)
    assert attempt.outcome == "succeeded"
    assert lookups == ["pinned.test"]
    assert receiver.received[0].headers["host"] == f"pinned.test:{receiver.port}"


def test_proxy_settings_in_the_environment_are_ignored(receiver, allow_local, monkeypatch):
    proxy = Receiver()
    try:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(name, proxy.url(path=""))
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        assert deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local).outcome == "succeeded"
        assert proxy.received == [] and len(receiver.received) == 1
    finally:
        proxy.close()


def test_attempt_record_is_json_ready(receiver, allow_local):
    receiver.will_reply(Reply(503, body=b"later"))
    record = deliver(receiver.url(), BODY, MSG_ID, [generate_secret()], allow_local).as_record()
    assert json.loads(json.dumps(record)) == record
    assert set(record) == {
        "number", "started_at", "outcome", "status_code", "error", "duration_s", "response_excerpt", "next_retry_at"
    }
    assert (record["outcome"], record["status_code"], record["response_excerpt"]) == ("retry", 503, "later")


# --- HTTPS: the socket goes to the checked address, TLS still checks the URL's host name ---


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for the name `localhost` only (no IP address in it)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_receiver(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    r = Receiver(tls=context)
    yield r
    r.close()


def test_https_delivery_verifies_the_certificate_for_the_host_name(tls_receiver, certificate, allow_local):
    secret = generate_secret()
    url = tls_receiver.url(host="localhost", scheme="https")
    attempt = deliver(url, BODY, MSG_ID, [secret], allow_local, verify=str(certificate[0]))
    assert attempt.outcome == "succeeded", attempt.error
    [request] = tls_receiver.received
    assert Webhook(secret).verify(request.body, request.headers) == JOB


def test_https_certificate_for_another_name_is_refused(tls_receiver, certificate, allow_local):
    url = tls_receiver.url(host="127.0.0.1", scheme="https")  # the certificate names only localhost
    attempt = deliver(url, BODY, MSG_ID, [generate_secret()], allow_local, verify=str(certificate[0]))
    assert attempt.outcome == "retry" and "certificate" in attempt.error.lower()
    assert tls_receiver.received == []
