"""A 7,000-token prompt runs with the engine's defaults (max_len: the model's 8,192), and while it is prefilled,
chunk by chunk, the other sequences of the batch keep decoding (real default model, in the dtype this CPU computes
natively: bfloat16 where it has the instructions, float32 where bfloat16 would be emulated)."""
from __future__ import annotations

import copy
import time

import pytest
import torch

from models.dtypes import resolve_dtype
from models.engine import Engine, EngineConfig
from models.engine.loading import load_tokenizer
from models.engine.types import EngineEvent, GenerationRequest
from models.params import GenerationParams

pytestmark = pytest.mark.slow


def test_a_7000_token_prompt_succeeds_while_the_others_keep_decoding(smollm, gguf_path):
    dtype = resolve_dtype("auto")
    net = copy.deepcopy(smollm).to(getattr(torch, dtype))
    tokenizer, template = load_tokenizer(gguf_path)
    engine = Engine(net, net.cfg, tokenizer, template, EngineConfig(dtype=dtype))
    assert engine.max_len == 8192
    engine.start()
    try:
        words = "the river runs past the old mill and on to the sea while the town sleeps".split()
        document = " ".join(words[i % len(words)] for i in range(6900))
        long = GenerationRequest("long", GenerationParams(max_new_tokens=8),
                                 messages=[{"role": "user", "content": document + "\nSummarize."}])
        assert 6900 <= len(engine.encode(long)) <= 7500  # 7,366 with the default tokenizer
        stamps: dict[str, list[float]] = {}

        def listen(event: EngineEvent) -> None:
            if event.kind == "delta" or event.kind == "started":
                stamps.setdefault(f"{event.request_id}:{event.kind}", []).append(time.perf_counter())

        others = [engine.submit(GenerationRequest(f"o{i}", GenerationParams(max_new_tokens=400, ignore_eos=True),
                                                  prompt=f"Count to one hundred, number {i}:"), listen)
                  for i in range(3)]
        time.sleep(2.0)  # they are decoding
        handle = engine.submit(long, listen)
        result = handle.wait(900)
        long_started, long_first = stamps["long:started"][0], stamps["long:delta"][0]
        for h in others:
            h.wait(900)
    finally:
        engine.stop()
    assert result.prompt_tokens >= 6900 and result.completion_tokens == 8
    # the others got tokens all through the long prompt's prefill, which took many steps
    during = [t for i in range(3) for t in stamps[f"o{i}:delta"] if long_started < t < long_first]
    gaps = sorted(b - a for i in range(3)
                  for a, b in zip(stamps[f"o{i}:delta"][:-1], stamps[f"o{i}:delta"][1:], strict=True)
                  if long_started < b < long_first)
    print(f"long prefill {long_first - long_started:.1f} s; the others' token gaps meanwhile: "
          f"median {gaps[len(gaps) // 2] * 1000:.0f} ms, max {gaps[-1] * 1000:.0f} ms, {len(gaps)} gaps")
    assert len(during) >= 3 * 10
