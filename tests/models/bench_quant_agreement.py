"""Greedy agreement of each quantization mode with a reference mode on a workload (not a test).

    PYTHONPATH=. python tests/models/bench_quant_agreement.py --workload FILE [--modes int8,int4]
        [--reference-dtype bfloat16] [--dtype auto]

Every request of the workload (the shared bench kit's workload.py; greedy, ignore_eos) runs through an engine
per mode; printed per mode: the share of requests whose tokens equal the reference's exactly, and the share of
all tokens generated before each request's first difference (a greedy answer that differs once goes its own
way after, so later tokens say nothing more).
"""
from __future__ import annotations

import argparse
import json

from models.builtin import smollm2_gguf_path
from models.engine import EngineConfig, load_engine
from models.engine.bench import read_workload, to_request
from models.quant import compute_dtype_name


def answers(lines: list[dict], quantization: str, dtype: str) -> list[list[int]]:
    config = EngineConfig(max_batch=64, max_len=512, dtype=compute_dtype_name(quantization, dtype))
    engine = load_engine(str(smollm2_gguf_path()), config, quantization=quantization)
    engine.start()
    try:
        handles = [engine.submit(to_request(line)) for line in lines]
        return [h.wait().token_ids for h in handles]
    finally:
        engine.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True)
    ap.add_argument("--modes", default="int8,int4")
    ap.add_argument("--dtype", default="auto", help="the modes' compute dtype")
    ap.add_argument("--reference-dtype", default="bfloat16")
    args = ap.parse_args()
    lines = read_workload(args.workload)
    reference = answers(lines, "none", args.reference_dtype)
    total = sum(len(r) for r in reference)
    for mode in ["none", *args.modes.split(",")]:
        got = answers(lines, mode, args.dtype)
        same = sum(a == b for a, b in zip(got, reference, strict=True))
        before_first_difference = 0
        for a, b in zip(got, reference, strict=True):
            n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            before_first_difference += n
        print(json.dumps({"mode": mode, "dtype": args.dtype, "reference": f"none/{args.reference_dtype}",
                          "requests": len(lines), "identical": same,
                          "tokens_before_first_difference": round(before_first_difference / total, 3)}))


if __name__ == "__main__":
    main()
