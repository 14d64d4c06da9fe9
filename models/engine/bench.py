"""The engine side of `genq bench`: run a workload JSONL through an engine and report useful tokens/s.

Workload lines (see the shared bench kit's workload.py):
  {"id": "r0", "messages": [...], "max_new_tokens": 57, "ignore_eos": true, "params": {"do_sample": false}}
The result has the keys the peers' runner prints (system, requests, useful_new_tokens, seconds,
useful_tok_per_s) plus peak_rss_mb, cpu_seconds and `refused`: the requests the engine refused at submit (one that
cannot fit the model's context, say), each with its id and reason; the others run. Only generation is timed
(tokenizing and submitting included), not loading the model; one tiny request runs first, untimed, so one-time
start-up costs are not counted. Every option has a default that takes any workload of requests that fit the model.

  python -m models.engine.bench --workload FILE [--model PATH] [--max-batch 64] [--max-len N] ...
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from models.engine.prefill_cost import parse_span
from models.engine.types import EngineError, GenerationRequest
from models.params import GenerationParams


def read_workload(path: str | Path) -> list[dict[str, Any]]:
    """The workload's requests, one dict per non-empty line."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def line_params(line: dict[str, Any]) -> dict[str, Any]:
    """A workload line's generation parameters: its params, with max_new_tokens and ignore_eos on top."""
    params = dict(line.get("params") or {})
    for key in ("max_new_tokens", "ignore_eos"):
        if key in line:
            params[key] = line[key]
    return params


def to_request(line: dict[str, Any]) -> GenerationRequest:
    """A workload line as an engine request."""
    return GenerationRequest(str(line["id"]), GenerationParams.resolve(line_params(line)), prompt=line.get("prompt"),
                             messages=line.get("messages"))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_workload(engine: Any, requests: Iterable[dict[str, Any]], system: str = "genq") -> dict[str, Any]:
    """Submit every request at once to a started engine, wait for all; the figures as one dict. A request the
    engine refuses (at submit, or failed alone) is listed in `refused` and the others run."""
    reqs = [to_request(line) for line in requests]
    engine.submit(GenerationRequest("warmup", GenerationParams(max_new_tokens=2), prompt="Hello")).wait()
    start, cpu_start = time.perf_counter(), time.process_time()
    refused: list[dict[str, str]] = []
    handles = []
    for r in reqs:
        try:
            handles.append(engine.submit(r))
        except EngineError as e:
            refused.append({"id": r.request_id, "code": e.code, "error": str(e)})
    useful = 0
    for h in handles:
        try:
            useful += h.wait().completion_tokens
        except EngineError as e:
            refused.append({"id": h.request_id, "code": e.code, "error": str(e)})
    seconds = time.perf_counter() - start
    # CPU seconds of this process over the same span: on a machine shared with other work, wall time
    # stretches while CPU time does not, so this tells a slow machine from a slow engine
    cpu = time.process_time() - cpu_start
    return {"system": system, "requests": len(reqs), "useful_new_tokens": useful, "seconds": round(seconds, 2),
            "useful_tok_per_s": round(useful / seconds, 1), "peak_rss_mb": peak_rss_mb(),
            "cpu_seconds": round(cpu, 2), "refused": refused}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", required=True, help="JSONL file, one request a line")
    ap.add_argument("--model", default=None, help="a .gguf file or Hugging Face directory (default: the builtin)")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=None, help="default: the model's context length")
    ap.add_argument("--prefill-chunk", type=int, default=512)
    ap.add_argument("--prefill-span", type=parse_span, default=0,
                    help="positions where a prompt token's attention costs its projections, or auto (from the "
                         "model's shape); 0, the default: every prompt token costs the same (prefill_cost.py)")
    ap.add_argument("--kv-budget-mb", type=int, help="default: half the memory available after the weights")
    ap.add_argument("--kv-quantization", default="auto", choices=("auto", "int8", "none"),
                    help="the KV cache in 8 bits: auto (where the C attention reads it, the default), int8, none")
    ap.add_argument("--dtype", default="auto", help="float32 | bfloat16 | float16 | auto (the default)")
    ap.add_argument("--quantization", default="none",
                    help="none (the default) | int8 | int4 | q8 | q4 (CPU) | bnb_int8 | nf4 | fp4 (bitsandbytes): "
                         "models/quant/")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--stats", action="store_true", help="also print the engine's step statistics to stderr")
    a = ap.parse_args(argv)

    from models.engine import EngineConfig, load_engine
    from models.quant import compute_dtype_name

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.model is None:
        from models.builtin import smollm2_gguf_path

        a.model = str(smollm2_gguf_path())
    budget = None if a.kv_budget_mb is None else a.kv_budget_mb << 20
    engine = load_engine(a.model, EngineConfig(max_batch=a.max_batch, max_len=a.max_len,
                                               prefill_chunk=a.prefill_chunk, prefill_span=a.prefill_span,
                                               kv_budget_bytes=budget, kv_quantization=a.kv_quantization,
                                               dtype=compute_dtype_name(a.quantization, a.dtype)),
                       quantization=a.quantization)
    engine.start()
    try:
        result = run_workload(engine, read_workload(a.workload))
        result["dtype"] = engine.engine_config.dtype
        result["quantization"] = a.quantization
        result["kv_cache"] = str(engine.cache_dtype).removeprefix("torch.")
        for r in result["refused"]:
            print(f"refused {r['id']}: {r['code']}: {r['error']}", file=sys.stderr)
        if a.stats:
            print(json.dumps(engine.stats()), file=sys.stderr)
    finally:
        engine.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
