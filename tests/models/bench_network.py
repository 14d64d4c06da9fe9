"""Speed of the network on the default model (not a test): load time, decode steps, prefill.

    PYTHONPATH=. python tests/models/bench_network.py [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from models.batch import BatchPlan
from models.builtin import smollm2_gguf_path
from models.weights import load_network


def timeit(fn, repeat: int) -> float:
    """The best of `repeat` runs: the machine is shared, and the minimum is the least disturbed figure."""
    fn()  # warm up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=200)
    ap.add_argument("--batches", default="1,16,32,64")
    ap.add_argument("--contiguous", action="store_true", help="decode slots 0..B-1 instead of scattered")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    cfg, net = load_network(smollm2_gguf_path())
    print(f"load: {time.perf_counter() - t0:.2f} s")

    max_b = max(int(b) for b in args.batches.split(","))
    cache = net.new_cache(2 * max_b + 1, args.context + 300)
    cache.k.normal_()
    cache.v.normal_()
    for b in (int(x) for x in args.batches.split(",")):
        slots = torch.arange(b) if args.contiguous else torch.arange(b) * 2 + 1  # odd slots: not contiguous
        # contexts spread around `context` so the mask has padding to hide
        positions = args.context - 20 + torch.arange(b) % 40
        plan = BatchPlan(token_ids=torch.randint(0, cfg.vocab_size, (b,)), positions=positions, slots=slots,
                         num_decode=b, prefills=[], logits_rows=torch.arange(b))
        sec = timeit(lambda: net(plan, cache), repeat=max(5, 40 // b))
        print(f"decode B={b:3d} ctx~{args.context}: {sec * 1000:7.1f} ms/step  {b / sec:7.1f} tok/s")

    n = 256
    plan = BatchPlan(token_ids=torch.randint(0, cfg.vocab_size, (n,)), positions=torch.arange(n),
                     slots=torch.zeros(n, dtype=torch.long), num_decode=0, prefills=[(0, 0, 0, n)],
                     logits_rows=torch.tensor([n - 1]))
    sec = timeit(lambda: net(plan, cache), repeat=5)
    print(f"prefill {n} tokens: {sec * 1000:7.1f} ms  {n / sec:7.1f} tok/s")


if __name__ == "__main__":
    main()
