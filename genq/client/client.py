"""`GenqClient`: genq's `/v1` API as Python calls, over `requests`."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import requests

from genq.client.errors import ApiError, ConnectionFailed
from genq.client.sse import Event, parse_events

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})
MAX_PREFER_WAIT = 60  # the API caps `Prefer: wait=N` at 60 s


class GenqClient:
    """One genq service. `url` is its root (`http://host:8000`); `api_key`, when set, goes in
    `Authorization: Bearer`; `timeout` bounds each plain request (streams wait as long as the job runs)."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 30.0,
                 session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = session or requests.Session()
        self._http.headers["User-Agent"] = "genq-client"
        if api_key:
            self._http.headers["Authorization"] = f"Bearer {api_key}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> GenqClient:
        """A client for `GENQ_URL` (default http://127.0.0.1:8000) with `GENQ_API_KEY` if set."""
        env = os.environ if env is None else env
        return cls(env.get("GENQ_URL") or DEFAULT_URL, env.get("GENQ_API_KEY") or None, **kwargs)

    # jobs

    def submit(self, prompt: str | None = None, *, messages: list[dict[str, str]] | None = None,
               model: str | None = None, params: Mapping[str, Any] | None = None,
               wait: float | None = None, idempotency_key: str | None = None, **fields: Any) -> dict[str, Any]:
        """Submit one job (a `prompt`, or chat `messages`); other job fields (`metadata`, `webhook`, `priority`,
        ...) go as keywords. `wait`: seconds the API may hold the answer until the job finishes (at most 60)."""
        body: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        if messages is not None:
            body["messages"] = messages
        if prompt is not None:
            body["prompt"] = prompt
        if model is not None:
            body["model"] = model
        if params:
            body["params"] = dict(params)
        headers = {}
        if wait:
            headers["Prefer"] = f"wait={min(int(wait), MAX_PREFER_WAIT)}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        timeout = self.timeout + (min(wait, MAX_PREFER_WAIT) if wait else 0)
        return self._json("POST", "/v1/jobs", json=body, headers=headers, timeout=timeout)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def list_jobs(self, status: str | Iterable[str] | None = None, *, model: str | None = None,
                  limit: int | None = None, cursor: str | None = None,
                  metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One page, newest first: `{"data", "next_cursor", "has_more"}`."""
        query: list[tuple[str, str]] = []
        for s in ([status] if isinstance(status, str) else status or []):
            query.append(("status", s))
        if model is not None:
            query.append(("model", model))
        if limit is not None:
            query.append(("limit", str(limit)))
        if cursor is not None:
            query.append(("cursor", cursor))
        query += [(f"metadata[{k}]", v) for k, v in (metadata or {}).items()]
        return self._json("GET", "/v1/jobs", params=query)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel: a queued job ends at once; a running one is stopped by its worker (poll, or `wait`)."""
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> dict[str, Any]:
        """The job once it has finished (any final status); TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(poll)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's events until `done` (a finished job's replay ends at once). A stream the service ends
        early (it lasts `GENQ_EVENTS_MAX_SECONDS`) is resumed from the last event id, with no gap or repeat."""
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            response = self._send("GET", f"/v1/jobs/{job_id}/events", headers=headers, stream=True,
                                  timeout=(self.timeout, None))
            with response:
                self._raise_for_error(response)
                for event in parse_events(response.iter_lines(decode_unicode=True)):
                    if event.id is not None:
                        last_event_id = event.id
                    yield event
                    if event.event == "done":
                        return

    def stream_text(self, job_id: str) -> Iterator[str]:
        """The job's text as it is generated; after a takeover (`restart`) the text starts again, so the
        pieces after the last restart join to the job's output. Ends when the job does."""
        for event in self.events(job_id):
            if event.event == "delta":
                yield event.data["text"] if isinstance(event.data, dict) else str(event.data)

    # batches

    def submit_batch(self, lines: str | bytes | Iterable[Mapping[str, Any]],
                     metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Submit a batch: JSONL text or bytes, or an iterable of line objects (each a job body plus a
        `custom_id`, or OpenAI's request-line shape where the service accepts it)."""
        if isinstance(lines, bytes):
            data = lines
        elif isinstance(lines, str):
            data = lines.encode()
        else:
            data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        params = {"metadata": json.dumps(metadata)} if metadata is not None else None
        return self._json("POST", "/v1/batches", data=data, params=params,
                          headers={"Content-Type": "application/jsonl"})

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/batches/{batch_id}")

    def wait_batch(self, batch_id: str, timeout: float | None = None, poll: float = 1.0,
                   on_progress: Any = None) -> dict[str, Any]:
        """The batch once every job has finished; `on_progress(batch)` is called after each poll."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.get_batch(batch_id)
            if on_progress is not None:
                on_progress(batch)
            if batch["status"] == "completed":
                return batch
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"batch {batch_id} still {batch['status']} after {timeout}s")
            time.sleep(poll)

    def batch_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """`{"custom_id", "job"}` for every line of the batch, in file order."""
        response = self._send("GET", f"/v1/batches/{batch_id}/results", stream=True, timeout=(self.timeout, None))
        with response:
            self._raise_for_error(response)
            for line in response.iter_lines(decode_unicode=True):
                if line:
                    yield json.loads(line)

    # other resources

    def models(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/models")["data"])

    def webhook_secret(self) -> str:
        """The current webhook signing secret (`whsec_...`), for `standardwebhooks.Webhook(secret)`."""
        return str(self._json("GET", "/v1/webhooks/secret")["secret"])

    # HTTP

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        self._raise_for_error(response)
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "invalid_response",
                           f"not JSON: {response.text[:200]!r}") from None

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            return self._http.request(method, self.url + path, **kwargs)
        except requests.RequestException as e:
            raise ConnectionFailed(f"{method} {self.url}{path}: {type(e).__name__}: {e}") from e

    @staticmethod
    def _raise_for_error(response: requests.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        raise ApiError.from_response(response.status_code, body, response.text, response.headers.get("Retry-After"))
