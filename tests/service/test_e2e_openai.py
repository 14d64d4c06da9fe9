"""The official `openai` client against genq on the production shape, with the real default model: PostgreSQL,
Redis, a generation worker (`genq worker --queues models`) and the API over real HTTP. Chat completions and
completions, streamed and not; the Batch API from upload to output file; and the README's examples, run as
written (with this service's URL)."""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from e2e_helpers import REDIS_URL, ApiThread, Child
from openai import OpenAI

from api import create_app
from genq.settings import DEFAULT_MODEL_NAME, Settings

pytestmark = pytest.mark.slow

LOAD_TIMEOUT_S = 300
README = Path(__file__).resolve().parents[2] / "README.md"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def env(migrated_postgresql_url: str, redis_key_prefix: str) -> dict[str, str]:
    return {"DATABASE_URL": migrated_postgresql_url, "GENQ_BROKER_URL": REDIS_URL,
            "GENQ_BROKER_KEY_PREFIX": redis_key_prefix, "GENQ_BATCH_SIZE": "4", "GENQ_EVENTS_POLL_MS": "50"}


@pytest.fixture(scope="module")
def api_url(env: dict[str, str]) -> Iterator[str]:
    worker = Child(["worker", "--queues", "models"], env)
    try:
        worker.wait_for_line("ready in", LOAD_TIMEOUT_S)
        server = ApiThread(create_app(Settings.from_env(env)))
        yield server.url
        server.stop()
    finally:
        worker.stop()


@pytest.fixture
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/openai/v1", api_key="unused", max_retries=0, timeout=900)


def test_a_chat_completion_names_paris_and_is_a_genq_job(client: OpenAI, api_url: str) -> None:
    completion = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=FRANCE, temperature=0,
                                                max_tokens=24)
    choice = completion.choices[0]
    assert "Paris" in choice.message.content and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and completion.model == DEFAULT_MODEL_NAME
    job = requests.get(f"{api_url}/v1/jobs/{completion.id}", timeout=10).json()
    assert job["status"] == "succeeded" and job["output"]["text"] == choice.message.content
    assert completion.usage.completion_tokens == job["output"]["usage"]["completion_tokens"] > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_a_stream_joins_to_the_greedy_answer_and_ends_with_usage(client: OpenAI, api_url: str) -> None:
    kwargs = {"model": DEFAULT_MODEL_NAME, "messages": FRANCE, "temperature": 0, "max_completion_tokens": 32}
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and "Paris" in text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # it came in pieces
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_the_raw_stream_is_openai_s_format_ending_with_done(api_url: str) -> None:
    with requests.post(f"{api_url}/openai/v1/completions", stream=True, timeout=300, json={
            "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line[len("data: "):] for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks) and chunks[-1]["choices"][0]["finish_reason"]


def test_completions_stream_and_not_agree_and_finish_for_length(client: OpenAI) -> None:
    kwargs = {"model": DEFAULT_MODEL_NAME, "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}
    whole = client.completions.create(**kwargs)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 5
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kwargs, stream=True))
    assert streamed == whole.choices[0].text


def test_stop_strings_end_the_answer_with_finish_reason_stop(client: OpenAI) -> None:
    whole = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=FRANCE, temperature=0, max_tokens=24)
    text = whole.choices[0].message.content
    cut = text.index("Paris")
    stopped = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=FRANCE, temperature=0,
                                             max_tokens=24, stop=["Paris"])
    assert stopped.choices[0].message.content == text[:cut] and stopped.choices[0].finish_reason == "stop"


def test_logprobs_come_per_token_with_their_alternatives(client: OpenAI) -> None:
    completion = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=FRANCE, temperature=0,
                                                max_tokens=8, logprobs=True, top_logprobs=3)
    content = completion.choices[0].logprobs.content
    assert len(content) == completion.usage.completion_tokens
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)
    # greedy: each chosen token is its step's most likely one
    assert all(t.top_logprobs[0].token == t.token for t in content)
    legacy = client.completions.create(model=DEFAULT_MODEL_NAME, prompt="Paris is", max_tokens=4, temperature=0,
                                       logprobs=2)
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4


def test_seeded_sampling_repeats_and_penalties_change_the_answer(client: OpenAI) -> None:
    kwargs = {"model": DEFAULT_MODEL_NAME, "messages": [{"role": "user", "content": "Write a short poem about rain."}],
              "max_tokens": 12, "temperature": 0.9, "top_p": 0.95, "seed": 1234}
    first, again = (client.chat.completions.create(**kwargs).choices[0].message.content for _ in range(2))
    assert first == again
    greedy = {**kwargs, "temperature": 0}
    plain = client.chat.completions.create(**greedy).choices[0].message.content
    penalised = client.chat.completions.create(**greedy, frequency_penalty=2.0,
                                               presence_penalty=2.0).choices[0].message.content
    assert penalised != plain


def test_a_batch_of_several_requests_completes_and_its_output_file_parses(client: OpenAI, api_url: str) -> None:
    questions = ["What is the capital of France?", "What is 2 + 2?", "Name a color.", "Say hello."]
    lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": DEFAULT_MODEL_NAME, "messages": [{"role": "user", "content": q}], "max_tokens": 16,
                       "temperature": 0}} for i, q in enumerate(questions)]
    lines.append({"custom_id": "one-token", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}})
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    input_file = client.files.create(file=("questions.jsonl", content), purpose="batch")
    batch = client.batches.create(input_file_id=input_file.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    deadline = time.monotonic() + 300
    while batch.status not in ("completed", "failed", "cancelled", "expired") and time.monotonic() < deadline:
        time.sleep(1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 5 and batch.error_file_id is None
    output = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in output)
    bodies = {line["custom_id"]: line["response"]["body"] for line in output}
    assert all(b["object"] == "chat.completion" for b in bodies.values())
    assert "Paris" in bodies["q0"]["choices"][0]["message"]["content"]
    assert bodies["one-token"]["choices"][0]["finish_reason"] == "length"
    genq = requests.get(f"{api_url}/v1/batches/{batch.id}", timeout=10).json()
    assert genq["counts"]["succeeded"] == 5  # the same batch, as genq shows it


def _readme_examples() -> list[str]:
    """The Python code blocks of the README's "OpenAI-compatible API" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## OpenAI-compatible API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_examples_run_against_the_service(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    examples = _readme_examples()
    assert len(examples) >= 3
    for code in examples:
        exec(compile(code.replace("http://localhost:8000", api_url), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.count("Paris") >= 2, printed
