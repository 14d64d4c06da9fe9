"""`genq bench --through-service`: submit a workload over HTTP and measure the whole path.

Reports throughput (jobs/s, completion tokens/s) and latency from submit to finished, as the client sees it.
"""
from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import requests

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "List three primary colors.",
]
POLL_S = 0.1


def run_service_bench(url: str, *, jobs: int, max_new_tokens: int, model: str | None = None,
                      timeout_s: float = 1800.0) -> int:
    """Submit `jobs` greedy jobs at once, wait for all, print the figures; returns 0 if all succeeded."""
    session = requests.Session()
    workers = min(16, jobs)
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=workers))
    session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=workers))
    started = time.perf_counter()

    def submit(i: int) -> tuple[str, float]:
        body: dict = {
            "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "params": {"max_new_tokens": max_new_tokens},
        }
        if model:
            body["model"] = model
        r = session.post(f"{url}/v1/jobs", json=body, timeout=30)
        r.raise_for_status()
        return r.json()["id"], time.perf_counter()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        submitted = list(pool.map(submit, range(jobs)))
    pending = {job_id: t for job_id, t in submitted}
    latencies: list[float] = []
    tokens = failed = 0
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = session.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
            if job["status"] in ("succeeded", "failed", "canceled"):
                latencies.append(time.perf_counter() - pending.pop(job_id))
                if job["status"] == "succeeded":
                    tokens += job["output"]["usage"]["completion_tokens"]
                else:
                    failed += 1
        time.sleep(POLL_S)
    elapsed = time.perf_counter() - started
    done = len(latencies)
    print(f"jobs: {done}/{jobs} finished, {failed} not succeeded, {len(pending)} unfinished, in {elapsed:.2f}s")
    if done:
        print(f"throughput: {done / elapsed:.2f} jobs/s, {tokens / elapsed:.1f} completion tokens/s")
        print(f"latency: p50 {statistics.median(latencies):.2f}s, max {max(latencies):.2f}s")
    return 0 if done == jobs and not failed else 1
