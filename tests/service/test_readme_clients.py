"""The README's "Python clients" section runs as written: its python blocks, in order, in one namespace,
against a running service (the API, PostgreSQL, a file-system broker, one worker serving the real default model
and webhook deliveries), with GENQ_URL pointing at it. Then what they printed and kept is checked."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from e2e_helpers import ROOT, wait_for_job
from live_service import LiveService

pytestmark = pytest.mark.slow


def readme_blocks(section: str) -> list[str]:
    """The ```python blocks of the README section titled `section` (up to the next `## ` heading)."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"no section {section!r}"
    return re.findall(r"^```python\n(.*?)^```$", match.group(1), re.M | re.S)


@pytest.fixture(scope="module")
def service(postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    svc = LiveService(postgres_database(), tmp_path_factory.mktemp("readme"),
                      {"GENQ_WEBHOOK_ALLOW": "127.0.0.1", "GENQ_WEBHOOK_SWEEP_MS": "300"}, [])
    # one job first, so the blocks' timeouts do not pay for the API's first tokenizer load on a busy machine
    warm = requests.post(f"{svc.url}/v1/jobs", json={"prompt": "Hi", "params": {"max_new_tokens": 1}}, timeout=300)
    wait_for_job(svc.url, warm.json()["id"], 300)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def ran(service: LiveService) -> tuple[dict[str, Any], str]:
    namespace: dict[str, Any] = {"__name__": "readme"}
    printed = io.StringIO()
    saved = {k: os.environ.get(k) for k in ("GENQ_URL", "GENQ_API_KEY")}
    os.environ["GENQ_URL"], os.environ["GENQ_API_KEY"] = service.url, ""
    try:
        with contextlib.redirect_stdout(printed):
            for i, block in enumerate(readme_blocks("Python clients")):
                exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return namespace, printed.getvalue()


def test_the_section_has_the_blocks_it_describes() -> None:
    assert len(readme_blocks("Python clients")) == 5


def test_submit_and_wait_answers_paris_over_http_and_with_the_client(ran: tuple[dict[str, Any], str]) -> None:
    ns, printed = ran
    assert ns["job"]["status"] == "succeeded" and "Paris" in ns["job"]["output"]["text"]
    assert printed.startswith("succeeded ")
    refused = ns["refused"]
    assert (refused.status, refused.code, refused.field) == (422, "invalid_param", "params.top_p")


def test_the_streamed_pieces_join_to_the_job_output_both_ways(ran: tuple[dict[str, Any], str]) -> None:
    ns, printed = ran
    text = ns["client"].get_job(ns["story"]["id"])["output"]["text"]
    assert text and "".join(ns["pieces"]) == text == "".join(ns["replayed"])
    assert text in printed


def test_the_webhook_receiver_verified_the_signed_job(ran: tuple[dict[str, Any], str]) -> None:
    ns, printed = ran
    assert [(r["id"], r["status"]) for r in ns["received"]] == [(ns["hooked"]["id"], "succeeded")]
    assert f"{ns['hooked']['id']} succeeded" in printed


def test_the_batch_answers_every_line_in_file_order(ran: tuple[dict[str, Any], str]) -> None:
    ns, _ = ran
    assert ns["batch"]["counts"]["succeeded"] == 3 and list(ns["answers"]) == ["France", "Italy", "Japan"]
    assert "Paris" in ns["answers"]["France"] and all(ns["answers"].values())
    assert [json.loads(line)["custom_id"] for line in ns["results"]] == ["France", "Italy", "Japan"]

