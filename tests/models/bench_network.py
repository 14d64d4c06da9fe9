"""Speed of the network on the default model (not a test): load time, decode steps, prefill.

    PYTHONPATH=. python tests/models/bench_network.py [--threads 2] [--rounds 15]

The machine may be shared, so every case is timed once per round, the cases interleaved, and the best
round is reported: the least disturbed figure, and disturbances hit all cases alike.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from models.batch import BatchPlan
from models.builtin import smollm2_gguf_path
from models.weights import load_network


def decode_plan(b: int, context: int, layout: str, vocab: int) -> BatchPlan:
    g = torch.Generator().manual_seed(b)
    slots = {"contiguous": torch.arange(b),  # 0..B-1: attended in place
             "dense": torch.randperm(b + b // 4, generator=g)[:b],  # shuffled, a few holes: a slice with idle rows
             "sparse": torch.arange(b) * 4}[layout]  # every 4th slot: gathered
    positions = context - 20 + torch.arange(b) % 40  # lengths spread around `context`: the mask has padding
    return BatchPlan(token_ids=torch.randint(0, vocab, (b,), generator=g), positions=positions, slots=slots,
                     num_decode=b, prefills=[], logits_rows=torch.arange(b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=200)
    ap.add_argument("--batches", default="1,16,32,64")
    ap.add_argument("--layouts", default="contiguous,dense,sparse")
    ap.add_argument("--prefill", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    cfg, net = load_network(smollm2_gguf_path())
    print(f"load: {time.perf_counter() - t0:.2f} s (threads {args.threads})")

    batches = [int(b) for b in args.batches.split(",")]
    cache = net.new_cache(4 * max(batches), args.context + 300)
    cache.k.normal_()
    cache.v.normal_()
    cases: dict[str, tuple[int, Callable[[], object]]] = {}
    for layout in args.layouts.split(","):
        for b in batches:
            plan = decode_plan(b, args.context, layout, cfg.vocab_size)
            cases[f"decode B={b:3d} ctx~{args.context} {layout:10s}"] = (b, lambda p=plan: net(p, cache))
    n = args.prefill
    plan = BatchPlan(token_ids=torch.randint(0, cfg.vocab_size, (n,)), positions=torch.arange(n),
                     slots=torch.zeros(n, dtype=torch.long), num_decode=0, prefills=[(0, 0, 0, n)],
                     logits_rows=torch.tensor([n - 1]))
    cases[f"prefill {n} tokens"] = (n, lambda: net(plan, cache))

    best = {name: float("inf") for name in cases}
    for _ in range(args.rounds + 1):  # the first round warms up and counts like the others
        for name, (_, run) in cases.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    for name, (tokens, _) in cases.items():
        print(f"{name}: {best[name] * 1000:7.1f} ms  {tokens / best[name]:7.1f} tok/s")


if __name__ == "__main__":
    main()
