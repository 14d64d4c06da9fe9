"""How a long prompt's prefill slows the sequences already decoding (not a test: a measurement).

    python tests/load/long_prefill_latency.py [--prompt-tokens 7000] [--decoding 4] [--quantization none]
        [--prefill-span N|auto]

The engine (defaults, the default model) first runs `--decoding` requests that decode a long answer. Once they
are decoding steadily, one request with a prompt of about `--prompt-tokens` tokens joins. Its prompt is
prefilled in chunks (the step's budget, `prefill_chunk` tokens at a context's start, fewer later:
models/engine/prefill_cost.py), so the others keep getting a token in every step.
Each token the decoding requests receive is timed, and the script prints one JSON line:
- `before`: their inter-token gaps (ms: p50, p90, max) while they decode alone;
- `during`: the same gaps from the long request's submission to its first token (its whole prefill), how
  many text deltas each decoding request received in that span (a token that completes no character sends
  none), and the engine steps in it (each gives every decoding request one token) with their mean duration;
- `long`: the long prompt's token count, its time to first token, and its prefill rate in tokens/s.

A decoding request that got no token during the prefill would show as `min_tokens_during: 0`: the batch stalled.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from long_documents import WORDS, sentence  # noqa: E402 (the long-document workload's word lists)

from models.engine.prefill_cost import parse_span  # noqa: E402
from models.engine.types import EngineEvent, GenerationRequest  # noqa: E402
from models.params import GenerationParams  # noqa: E402


def gaps_ms(times: list[float]) -> list[float]:
    return [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]


def summary(gaps: list[float]) -> dict[str, float]:
    if not gaps:
        return {"n": 0}
    s = sorted(gaps)
    return {"n": len(s), "p50": round(s[len(s) // 2], 1), "p90": round(s[int(len(s) * 0.9)], 1),
            "max": round(s[-1], 1)}


def long_prompt(engine: Any, tokens: int) -> str:
    """English sentences from the long-document workload's words: at least `tokens` prompt tokens (up to 10
    sentences more)."""
    import random

    rng = random.Random(5)
    words = WORDS["en"]
    text = ""
    while True:
        chunk = " ".join(sentence(rng, words, rng.randint(8, 20)) for _ in range(10))
        candidate = (text + " " + chunk).strip()
        n = len(engine.encode(GenerationRequest("probe", GenerationParams(max_new_tokens=1), prompt=candidate)))
        if n >= tokens:
            return candidate + "\nSummarize the text above."
        text = candidate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt-tokens", type=int, default=7000)
    ap.add_argument("--decoding", type=int, default=4)
    ap.add_argument("--quantization", default="none")
    ap.add_argument("--prefill-span", type=parse_span, default=0,
                    help="EngineConfig.prefill_span: N, or auto (from the model's shape); 0, the default: flat")
    a = ap.parse_args(argv)

    from models.builtin import smollm2_gguf_path
    from models.engine import EngineConfig, load_engine

    engine = load_engine(str(smollm2_gguf_path()), EngineConfig(dtype="auto", prefill_span=a.prefill_span),
                         quantization=a.quantization).start()
    try:
        prompt = long_prompt(engine, a.prompt_tokens)
        times: dict[str, list[float]] = {}
        lock = threading.Lock()

        def listener(event: EngineEvent) -> None:
            if event.kind == "delta":
                with lock:
                    times.setdefault(event.request_id, []).append(time.perf_counter())

        engine.submit(GenerationRequest("warmup", GenerationParams(max_new_tokens=2), prompt="Hello")).wait()
        handles = [engine.submit(GenerationRequest(f"d{i}", GenerationParams(max_new_tokens=1500, ignore_eos=True),
                                                   prompt=f"Write a long story about a village, part {i}."),
                                 listener) for i in range(a.decoding)]
        while min(len(times.get(f"d{i}", [])) for i in range(a.decoding)) < 40:
            time.sleep(0.05)
        first: list[float] = []

        def long_listener(event: EngineEvent) -> None:
            if event.kind == "delta" and not first:
                first.append(time.perf_counter())

        steps0, t0 = engine.stats()["steps"], time.perf_counter()
        long = engine.submit(GenerationRequest("long", GenerationParams(max_new_tokens=8, ignore_eos=True),
                                               prompt=prompt), long_listener)
        result = long.wait()
        t1 = first[0] if first else time.perf_counter()
        steps = engine.stats()["steps"] - steps0  # every decoding request gets a token in every step
        for h in handles:
            h.cancel()
        with lock:
            per_seq = {k: list(v) for k, v in times.items() if k.startswith("d")}
        before = [g for ts in per_seq.values() for g in gaps_ms([t for t in ts if t < t0])]
        during_times = {k: [t for t in ts if t0 <= t <= t1] for k, ts in per_seq.items()}
        # a gap during the prefill: from each token to the next one, both inside the span or the first one after
        during = []
        for ts in per_seq.values():
            inside = [t for t in ts if t0 <= t <= t1]
            after = [t for t in ts if t > t1][:1]
            last_before = [t for t in ts if t < t0][-1:]
            during += gaps_ms(last_before + inside + after)
        ttft = t1 - t0
        print(json.dumps({
            "decoding": a.decoding, "quantization": a.quantization,
            "before": summary(before),
            "during": {**summary(during), "min_tokens_during": min(len(v) for v in during_times.values()),
                       "steps": steps, "ms_per_step": round(ttft * 1000 / max(steps, 1), 1)},
            "long": {"prompt_tokens": result.prompt_tokens, "ttft_s": round(ttft, 2),
                     "prefill_tok_per_s": round(result.prompt_tokens / ttft, 1),
                     "finish_reason": result.finish_reason},
        }))
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
