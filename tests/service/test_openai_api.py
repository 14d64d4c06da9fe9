"""The OpenAI-compatible surface (/openai/v1) with the real `openai` client, without a worker: what does not
need generation. Requests become genq jobs, errors come back as the client's exception classes, a client that
disconnects cancels its job, and the files and Batch API work on genq's batches. Generation itself, with the
real model, is in test_e2e_openai.py."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests
from e2e_helpers import ApiThread, wait_until
from openai import OpenAI

from api import create_app
from genq.settings import DEFAULT_MODEL_NAME, Settings


@pytest.fixture(scope="module")
def api_url(migrated_postgresql_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = tmp_path_factory.mktemp("broker")
    settings = Settings.from_env({"DATABASE_URL": migrated_postgresql_url, "GENQ_BROKER_URL": f"filesystem://{broker}",
                                  "GENQ_EVENTS_POLL_MS": "50"})
    server = ApiThread(create_app(settings))
    yield server.url
    server.stop()


@pytest.fixture
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/openai/v1", api_key="unused", max_retries=0)


@pytest.fixture
def model(client: OpenAI) -> str:
    return client.models.list().data[0].id


def _job(api_url: str, job_id: str) -> dict[str, Any]:
    return requests.get(f"{api_url}/v1/jobs/{job_id}", timeout=10).json()


def _newest_job(api_url: str) -> dict[str, Any]:
    return requests.get(f"{api_url}/v1/jobs?limit=1", timeout=10).json()["data"][0]


def test_models_list_names_the_served_models(client: OpenAI, api_url: str) -> None:
    genq = requests.get(f"{api_url}/v1/models", timeout=10).json()["data"]
    models = client.models.list().data
    assert [m.id for m in models] == [m["name"] for m in genq]
    assert client.models.retrieve(models[0].id).id == models[0].id


@pytest.mark.parametrize(("kwargs", "param", "code"), [
    ({"n": 2}, "n", "unsupported_value"),
    ({"temperature": 2.5}, "temperature", "invalid_value"),
    ({"top_p": 0}, "top_p", "invalid_param"),
    ({"presence_penalty": 3}, "presence_penalty", "invalid_param"),
    ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_param"),
    ({"max_tokens": 10_000_000}, "max_tokens", "invalid_param"),
    ({"max_completion_tokens": 9000}, "max_completion_tokens", "context_length_exceeded"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "unsupported_parameter"),
    ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_value"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"extra_body": {"bogus": 1}}, "bogus", "unknown_parameter"),
])
def test_a_bad_chat_request_is_a_bad_request_error_naming_the_parameter(
    client: OpenAI, model: str, kwargs: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], **kwargs)
    error = caught.value
    assert error.status_code == 400 and error.param == param and error.code == code, error.body
    assert error.type == "invalid_request_error" and error.message


def test_unknown_models_batches_and_files_are_not_found_errors(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_abc")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-abc")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-batch-0c8d1f10-9b0e-4a57-9d4c-1f7b5e0f2f4b-output")


def test_the_error_body_has_openai_s_shape(api_url: str) -> None:
    response = requests.post(f"{api_url}/openai/v1/chat/completions", json={"messages": [], "n": 3}, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": {"message": response.json()["error"]["message"],
                                         "type": "invalid_request_error", "param": "n", "code": "unsupported_value"}}


def test_a_request_is_a_genq_job_with_openai_s_parameters(client: OpenAI, model: str, api_url: str) -> None:
    # no worker: the request waits until its client gives up, which cancels the job
    quick = client.with_options(timeout=1.5)
    with pytest.raises(openai.APITimeoutError):
        quick.chat.completions.create(
            model=model, messages=[{"role": "developer", "content": "Be brief."},
                                   {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            max_completion_tokens=7, temperature=0.5, top_p=0.9, stop=["\n"], seed=11, presence_penalty=0.5,
            frequency_penalty=-0.25, logprobs=True, top_logprobs=3, metadata={"app": "test"})
    job = _newest_job(api_url)
    assert job["input"] == {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    assert job["metadata"] == {"app": "test"}
    p = job["params"]
    assert (p["max_new_tokens"], p["do_sample"], p["temperature"], p["top_p"], p["top_k"], p["stop"], p["seed"],
            p["presence_penalty"], p["frequency_penalty"], p["logprobs"]) == (
        7, True, 0.5, 0.9, 0, ["\n"], 11, 0.5, -0.25, 3)


def test_a_synchronous_request_whose_client_disconnects_cancels_its_job(
    client: OpenAI, model: str, api_url: str
) -> None:
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=1.0).completions.create(model=model, prompt="Once upon a time", max_tokens=5,
                                                            temperature=0)
    job = _newest_job(api_url)
    assert job["input"] == {"prompt": "Once upon a time"} and job["params"]["do_sample"] is False
    assert wait_until(lambda: _job(api_url, job["id"])["status"] == "canceled", 10, "the job was not canceled")


def test_a_stream_whose_client_disconnects_cancels_its_job(client: OpenAI, model: str, api_url: str) -> None:
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], stream=True)
    first = next(iter(stream))
    assert first.object == "chat.completion.chunk" and first.choices[0].delta.role == "assistant"
    job_id = first.id
    assert _job(api_url, job_id)["status"] == "queued"
    stream.close()
    assert wait_until(lambda: _job(api_url, job_id)["status"] == "canceled", 10, "the job was not canceled")


def _batch_file(model: str, *bodies: dict[str, Any]) -> bytes:
    return "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": model, **body}}) + "\n" for i, body in enumerate(bodies)).encode()


def test_files_upload_read_list_and_delete(client: OpenAI, model: str) -> None:
    content = _batch_file(model, {"messages": [{"role": "user", "content": "Hi"}]})
    uploaded = client.files.create(file=("in.jsonl", content), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(content) and uploaded.filename == "in.jsonl"
    assert client.files.retrieve(uploaded.id).purpose == "batch"
    assert client.files.content(uploaded.id).read() == content
    assert uploaded.id in [f.id for f in client.files.list()]
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("x.jsonl", content), purpose="fine-tune")
    assert caught.value.param == "purpose"


def test_a_batch_with_a_bad_line_is_refused_naming_it(client: OpenAI, model: str, api_url: str) -> None:
    before = requests.get(f"{api_url}/v1/jobs?limit=1", timeout=10).json()["data"]
    content = _batch_file(model, {"messages": [{"role": "user", "content": "Hi"}]},
                          {"messages": [{"role": "user", "content": "Hi"}], "temperature": 9})
    file_id = client.files.create(file=("in.jsonl", content), purpose="batch").id
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert caught.value.param == "line[2].body.temperature", caught.value.body
    assert requests.get(f"{api_url}/v1/jobs?limit=1", timeout=10).json()["data"] == before  # nothing created
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=file_id, endpoint="/v1/completions", completion_window="24h")
    assert caught.value.param == "line[1].url"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nothing", endpoint="/v1/chat/completions", completion_window="24h")


def test_a_canceled_batch_is_cancelled_and_its_requests_are_in_the_error_file(
    client: OpenAI, model: str, api_url: str
) -> None:
    content = _batch_file(model, *[{"messages": [{"role": "user", "content": f"Say {i}"}]} for i in range(3)])
    file_id = client.files.create(file=("in.jsonl", content), purpose="batch").id
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"run": "x"})
    assert batch.status == "in_progress" and batch.request_counts.total == 3 and batch.metadata == {"run": "x"}
    genq = requests.get(f"{api_url}/v1/batches/{batch.id}", timeout=10).json()  # the same batch, genq's view
    assert genq["counts"]["queued"] == 3
    assert batch.id in [b.id for b in client.batches.list()]
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status == "cancelled" and cancelled.output_file_id is None  # queued jobs cancel at once
    assert client.batches.retrieve(batch.id).request_counts.failed == 3
    lines = [json.loads(line) for line in client.files.content(cancelled.error_file_id).text.splitlines()]
    assert [(line["custom_id"], line["response"], line["error"]["code"]) for line in lines] == [
        ("r0", None, "batch_cancelled"), ("r1", None, "batch_cancelled"), ("r2", None, "batch_cancelled")]


def test_genq_batches_accept_openai_request_lines(model: str, api_url: str) -> None:
    content = _batch_file(model, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
                                  "temperature": 0}) + json.dumps(
        {"custom_id": "own", "prompt": "Hello", "params": {"max_new_tokens": 2}}).encode() + b"\n"
    response = requests.post(f"{api_url}/v1/batches", data=content, headers={"content-type": "application/jsonl"},
                             timeout=10)
    assert response.status_code == 202, response.text
    results = [json.loads(line) for line in
               requests.get(f"{api_url}/v1/batches/{response.json()['id']}/results", timeout=10).text.splitlines()]
    assert [(r["custom_id"], r["job"]["input"], r["job"]["params"]["max_new_tokens"]) for r in results] == [
        ("r0", {"messages": [{"role": "user", "content": "Hi"}]}, 3), ("own", {"prompt": "Hello"}, 2)]
    bad = _batch_file(model, {"messages": [{"role": "user", "content": "Hi"}], "n": 2})
    response = requests.post(f"{api_url}/v1/batches", data=bad, headers={"content-type": "application/jsonl"},
                             timeout=10)
    assert response.status_code == 422 and response.json()["error"]["field"] == "line[1].body.n"


def test_the_client_s_http_errors_never_leak_genq_s_error_shape(api_url: str) -> None:
    for method, path in (("get", "/openai/v1/batches/x"), ("post", "/openai/v1/models"),
                         ("post", "/openai/v1/chat/completions")):
        response = requests.request(method, f"{api_url}{path}", data=b"{", headers={"content-type": "application/json"},
                                    timeout=10)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}, (path, response.text)
        assert response.status_code in (400, 404, 405)


def test_streams_past_the_cap_are_rate_limit_errors(migrated_postgresql_url: str,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = Settings.from_env({"DATABASE_URL": migrated_postgresql_url,
                                  "GENQ_BROKER_URL": f"filesystem://{tmp_path_factory.mktemp('broker')}",
                                  "GENQ_EVENTS_MAX_STREAMS_PER_CLIENT": "1"})
    server = ApiThread(create_app(settings))
    try:
        client = OpenAI(base_url=f"{server.url}/openai/v1", api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": "Hi"}]
        first = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=messages, stream=True)
        next(iter(first))  # open, waiting on a job no worker runs
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=messages, stream=True)
        assert caught.value.code == "too_many_streams"
        first.close()
    finally:
        server.stop()
