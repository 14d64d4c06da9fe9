"""POST /v1/jobs and GET /v1/jobs/<id>: validation, the job object, the one error shape."""
from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient

from api import create_app
from api.services import EXTENSION_KEY
from genq.relay import publish_unpublished
from genq.settings import Settings

PROMPT = {"prompt": "Hello"}
MESSAGES = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}


@pytest.fixture
def client(settings: Settings) -> FlaskClient:
    return create_app(settings).test_client()


def _assert_error(response: Any, status: int, code: str | None = None, field: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    if field is not None:
        assert error.get("field") == field


BAD_BODIES: list[tuple[str, Any, str, str | None]] = [
    # (case, body, error code, field)
    ("body is a list", [1, 2], "invalid_body", None),
    ("body is a string", "hello", "invalid_body", None),
    ("body is null", None, "invalid_body", None),
    ("no input", {}, "invalid_input", "prompt"),
    ("both inputs", {**PROMPT, **MESSAGES}, "invalid_input", "prompt"),
    ("unknown top-level field", {**PROMPT, "max_tokens": 5}, "unknown_field", "max_tokens"),
    ("prompt not a string", {"prompt": 5}, "invalid_value", "prompt"),
    ("prompt empty", {"prompt": ""}, "invalid_value", "prompt"),
    ("prompt a list", {"prompt": ["a"]}, "invalid_value", "prompt"),
    ("messages empty", {"messages": []}, "invalid_value", "messages"),
    ("messages an object", {"messages": {"role": "user"}}, "invalid_value", "messages"),
    ("messages a string", {"messages": "hi"}, "invalid_value", "messages"),
    ("message not an object", {"messages": ["hi"]}, "invalid_value", "messages[0]"),
    ("message without role", {"messages": [{"content": "hi"}]}, "invalid_value", "messages[0].role"),
    ("message with bad role", {"messages": [{"role": "boss", "content": "hi"}]}, "invalid_value",
     "messages[0].role"),
    ("message role not a string", {"messages": [{"role": 1, "content": "hi"}]}, "invalid_value",
     "messages[0].role"),
    ("message without content", {"messages": [{"role": "user"}]}, "invalid_value", "messages[0].content"),
    ("message content not a string", {"messages": [{"role": "user", "content": ["x"]}]}, "invalid_value",
     "messages[0].content"),
    ("second message bad", {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": None}]},
     "invalid_value", "messages[1].content"),
    ("message extra field", {"messages": [{"role": "user", "content": "a", "name": "x"}]}, "unknown_field",
     "messages[0].name"),
    ("model unknown", {**PROMPT, "model": "gpt-5"}, "unknown_model", "model"),
    ("model not a string", {**PROMPT, "model": 3}, "invalid_value", "model"),
    ("params not an object", {**PROMPT, "params": [1]}, "invalid_param", "params"),
    ("params unknown key", {**PROMPT, "params": {"max_tokens": 5}}, "invalid_param", "params.max_tokens"),
    ("max_new_tokens zero", {**PROMPT, "params": {"max_new_tokens": 0}}, "invalid_param", "params.max_new_tokens"),
    ("max_new_tokens a string", {**PROMPT, "params": {"max_new_tokens": "5"}}, "invalid_param",
     "params.max_new_tokens"),
    ("max_new_tokens a bool", {**PROMPT, "params": {"max_new_tokens": True}}, "invalid_param",
     "params.max_new_tokens"),
    ("max_new_tokens a float", {**PROMPT, "params": {"max_new_tokens": 2.5}}, "invalid_param",
     "params.max_new_tokens"),
    ("temperature zero", {**PROMPT, "params": {"temperature": 0}}, "invalid_param", "params.temperature"),
    ("temperature a string", {**PROMPT, "params": {"temperature": "hot"}}, "invalid_param", "params.temperature"),
    ("top_p above one", {**PROMPT, "params": {"top_p": 1.5}}, "invalid_param", "params.top_p"),
    ("top_k negative", {**PROMPT, "params": {"top_k": -1}}, "invalid_param", "params.top_k"),
    ("do_sample not a bool", {**PROMPT, "params": {"do_sample": "yes"}}, "invalid_param", "params.do_sample"),
    ("stop not strings", {**PROMPT, "params": {"stop": [1]}}, "invalid_param", "params.stop"),
    ("stop an object", {**PROMPT, "params": {"stop": {"a": 1}}}, "invalid_param", "params.stop"),
    ("stop_token_ids negative", {**PROMPT, "params": {"stop_token_ids": [-1]}}, "invalid_param",
     "params.stop_token_ids"),
    ("seed negative", {**PROMPT, "params": {"seed": -1}}, "invalid_param", "params.seed"),
    ("logprobs too many", {**PROMPT, "params": {"logprobs": 1000}}, "invalid_param", "params.logprobs"),
    ("top_k past int64 (it failed the whole batch)",
     {**PROMPT, "params": {"do_sample": True, "top_k": 9223372036854775808, "max_new_tokens": 1}}, "invalid_param",
     "params.top_k"),
    ("top_k past the vocabulary", {**PROMPT, "params": {"do_sample": True, "top_k": 49153}}, "invalid_param",
     "params.top_k"),
    ("stop token past the vocabulary", {**PROMPT, "params": {"stop_token_ids": [49152]}}, "invalid_param",
     "params.stop_token_ids"),
    ("temperature huge", {**PROMPT, "params": {"temperature": 1e308}}, "invalid_param", "params.temperature"),
    ("seed past int64", {**PROMPT, "params": {"seed": 2**63}}, "invalid_param", "params.seed"),
    ("stop string too long", {**PROMPT, "params": {"stop": ["x" * 257]}}, "invalid_param", "params.stop"),
    ("max_new_tokens past the context", {**PROMPT, "params": {"max_new_tokens": 8192}}, "context_length_exceeded",
     "params.max_new_tokens"),
    ("messages past the context", {"messages": [{"role": "user", "content": "hi " * 9000}]},
     "context_length_exceeded", "messages"),
    ("min above max", {**PROMPT, "params": {"min_new_tokens": 10, "max_new_tokens": 5}}, "invalid_param",
     "params.min_new_tokens"),
    ("metadata a list", {**PROMPT, "metadata": [1]}, "invalid_value", "metadata"),
    ("metadata a string", {**PROMPT, "metadata": "x"}, "invalid_value", "metadata"),
    ("metadata too large", {**PROMPT, "metadata": {"blob": "x" * 20_000}}, "invalid_value", "metadata"),
]


@pytest.mark.parametrize("case,body,code,field", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_job_bodies_get_422_with_code_and_field(
    client: FlaskClient, case: str, body: Any, code: str, field: str | None
) -> None:
    response = client.post("/v1/jobs", data=json.dumps(body), content_type="application/json")
    _assert_error(response, 422, code, field)


def _prompt_tokens(settings: Settings, prompt: str) -> int:
    from models.prompting import load_tokenizer, prompt_ids

    tokenizer, template = load_tokenizer(settings.models[settings.default_model].source)
    return len(prompt_ids(tokenizer, template, prompt=prompt))


def test_a_prompt_plus_max_new_tokens_that_just_fits_the_context_is_accepted(
    client: FlaskClient, settings: Settings
) -> None:
    prompt = "Once upon a time, " * 40
    room = 8192 - _prompt_tokens(settings, prompt)  # /v1/models: context_length 8192, the model's own
    ok = client.post("/v1/jobs", json={"prompt": prompt, "params": {"max_new_tokens": room}})
    assert ok.status_code == 202, ok.get_json()
    over = client.post("/v1/jobs", json={"prompt": prompt, "params": {"max_new_tokens": room + 1}})
    _assert_error(over, 422, "context_length_exceeded", "params.max_new_tokens")
    assert f"<= {room}" in over.get_json()["error"]["message"]


def test_a_prompt_that_alone_fills_the_context_names_the_prompt(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", json={"prompt": "hello " * 8300, "params": {"max_new_tokens": 1}})
    _assert_error(response, 422, "context_length_exceeded", "prompt")


def test_errors_quote_no_huge_number_or_name(client: FlaskClient) -> None:
    huge = "9" * 4000  # was written whole into the job's error and the worker's log
    response = client.post("/v1/jobs", data='{"prompt": "hi", "params": {"max_new_tokens": %s}}' % huge,
                           content_type="application/json")
    _assert_error(response, 422, "invalid_param", "params.max_new_tokens")
    assert "9" * 21 not in response.get_data(as_text=True)
    for body in ({**PROMPT, "k" * 10_000: 1}, {**PROMPT, "params": {"k" * 10_000: 1}},
                 {**PROMPT, "model": "m" * 10_000}):
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 422 and len(response.get_data(as_text=True)) < 1000


@pytest.mark.parametrize(
    "raw",
    ["{", "not json", '{"prompt": NaN}', '{"prompt": "x", "params": {"temperature": Infinity}}', "\xff\xfe", ""],
    ids=["truncated", "text", "NaN", "Infinity", "bad bytes", "empty"],
)
def test_unparseable_json_gets_400_invalid_json(client: FlaskClient, raw: str) -> None:
    response = client.post("/v1/jobs", data=raw.encode("latin-1"), content_type="application/json")
    _assert_error(response, 400, "invalid_json")


def test_a_body_not_declared_json_gets_415(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", data=json.dumps(PROMPT), content_type="text/plain")
    _assert_error(response, 415, "unsupported_media_type")


def test_a_body_over_the_limit_gets_413(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", json={"prompt": "x" * (2 << 20)})
    _assert_error(response, 413, "payload_too_large")


def test_a_wrong_method_gets_405_in_the_error_shape(client: FlaskClient) -> None:
    _assert_error(client.delete("/v1/jobs"), 405, "method_not_allowed")


def test_an_unknown_path_gets_404_in_the_error_shape(client: FlaskClient) -> None:
    _assert_error(client.get("/v2/everything"), 404, "not_found")


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "nope", "1 OR 1=1", "A" * 500])
def test_unknown_or_malformed_job_ids_get_404(client: FlaskClient, job_id: str) -> None:
    _assert_error(client.get(f"/v1/jobs/{job_id}"), 404, "job_not_found")


def test_a_submitted_job_is_accepted_queued_with_a_location(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", json={**MESSAGES, "params": {"max_new_tokens": 12}, "metadata": {"k": "v"}})
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["model"] == "smollm2-135m-instruct"
    assert job["input"] == MESSAGES
    assert job["metadata"] == {"k": "v"}
    assert job["output"] is None and job["error"] is None
    assert job["started_at"] is None and job["completed_at"] is None


def test_the_job_object_has_the_documented_fields(client: FlaskClient) -> None:
    created = client.post("/v1/jobs", json=PROMPT).get_json()
    job = client.get(f"/v1/jobs/{created['id']}").get_json()
    for key in ("id", "status", "model", "created_at", "started_at", "completed_at", "input", "params", "output",
                "error", "metadata"):
        assert key in job
    assert job["created_at"].endswith("Z")
    assert job == created


def test_stored_params_are_the_resolved_record_not_the_request(client: FlaskClient) -> None:
    job = client.post("/v1/jobs", json={**PROMPT, "params": {"temperature": 0.7, "stop": "\n"}}).get_json()
    params = job["params"]
    assert params["temperature"] == 0.7 and params["stop"] == ["\n"]
    assert params["max_new_tokens"] == 256  # the service default, shown rather than silently applied
    assert params["do_sample"] is False


def test_a_sampled_job_without_a_seed_is_given_one(client: FlaskClient) -> None:
    job = client.post("/v1/jobs", json={**PROMPT, "params": {"do_sample": True}}).get_json()
    assert isinstance(job["params"]["seed"], int)


def test_service_generation_defaults_apply_under_the_request(database_url: str, filesystem_broker_url: str) -> None:
    settings = Settings.from_env({
        "DATABASE_URL": database_url, "GENQ_BROKER_URL": filesystem_broker_url,
        "GENQ_GENERATION_DEFAULTS": '{"max_new_tokens": 32, "top_k": 5}',
    })
    client = create_app(settings).test_client()
    params = client.post("/v1/jobs", json={**PROMPT, "params": {"top_k": 7}}).get_json()["params"]
    assert (params["max_new_tokens"], params["top_k"]) == (32, 7)


def test_a_job_the_broker_refuses_is_accepted_and_published_once_the_broker_answers(
    database_url: str, filesystem_broker_url: str
) -> None:
    # a real Redis URL on a port nobody listens on: publishing genuinely fails
    down = create_app(Settings.from_env({"DATABASE_URL": database_url, "GENQ_BROKER_URL": "redis://127.0.0.1:9/0"}))
    response = down.test_client().post("/v1/jobs", json=PROMPT)
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["status"] == "queued" and job.get("error") is None
    svc = down.extensions[EXTENSION_KEY]
    svc.relay.stop()  # its broker never answers; the relay of a process whose broker does takes over below
    assert svc.store.get(job["id"]).published_at is None  # recorded, unpublished: the outbox holds it

    up = create_app(Settings.from_env({"DATABASE_URL": database_url, "GENQ_BROKER_URL": filesystem_broker_url}))
    up_svc = up.extensions[EXTENSION_KEY]
    sent, left = publish_unpublished(up_svc.store, up_svc.publisher)
    assert sent >= 1 and not left
    assert up_svc.store.get(job["id"]).published_at is not None
    assert up.test_client().get(f"/v1/jobs/{job['id']}").get_json()["status"] == "queued"
