"""Weight memory, decode speed and agreement with float32 of each quantization mode on the default model.

    python -m models.quant_bench [--threads 2] [--modes none,int8,nf4,fp4] [--context 200] [--device cpu]

For each mode the default GGUF is loaded through models.quant.load_quantized_network, then:
- weights: weight_bytes of the whole network, and of the swapped Linear layers alone;
- decode B=1 / B=64: one engine decode step (models/batch.py BatchPlan) for B sequences whose contexts
  spread around --context, the best of several runs (the machine is shared: the minimum is the least
  disturbed figure), as ms per step and tokens per second;
- agree: the share of positions of a fixed English text where the mode's next-token argmax equals
  float32's (teacher forced, so one early difference does not decide the rest); KL: the mean
  KL(float32 || mode) of the next-token distributions over the same positions, in nats;
- greedy: how many of 32 greedily generated tokens after a prompt equal float32's, position by position.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch import nn

from models.batch import BatchPlan, KVCache
from models.builtin import smollm2_gguf_path
from models.llama import LlamaNetwork
from models.quant import QUANT_MODES, load_quantized_network, weight_bytes

TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
        "movable metal type, oil-based ink and a wooden press adapted from those used for wine. Books became "
        "cheaper and more common, literacy spread across Europe, and ideas travelled faster than ever before.")
PROMPT = "The capital of France is"
GREEDY_TOKENS = 32


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of `repeat` runs, after one warm-up run."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def decode_seconds(net: LlamaNetwork, batch: int, context: int) -> float:
    """Best time of one decode step of `batch` sequences in odd (non-adjacent) slots, contexts context-20..+19."""
    cache = net.new_cache(2 * batch + 1, context + 40)
    cache.k.normal_()
    cache.v.normal_()
    plan = BatchPlan(token_ids=torch.randint(0, net.cfg.vocab_size, (batch,)),
                     positions=context - 20 + torch.arange(batch) % 40, slots=torch.arange(batch) * 2 + 1,
                     num_decode=batch, prefills=[], logits_rows=torch.arange(batch))
    return best_time(lambda: net(plan, cache), repeat=max(5, 60 // batch))


def greedy(net: LlamaNetwork, prompt: list[int], steps: int) -> list[int]:
    """Prefill `prompt` in one chunk, then decode `steps` argmax tokens one by one."""
    cache = KVCache.allocate(net.cfg.num_layers, 1, net.cfg.num_kv_heads, len(prompt) + steps, net.cfg.head_dim,
                             net.dtype, net.device)
    n = len(prompt)
    logits = net(BatchPlan(token_ids=torch.tensor(prompt), positions=torch.arange(n), slots=torch.zeros(n).long(),
                           num_decode=0, prefills=[(0, 0, 0, n)], logits_rows=torch.tensor([n - 1])), cache)
    out = [int(logits[0].argmax())]
    for i in range(steps - 1):
        plan = BatchPlan(token_ids=torch.tensor([out[-1]]), positions=torch.tensor([n + i]),
                         slots=torch.zeros(1).long(), num_decode=1, prefills=[], logits_rows=torch.arange(1))
        out.append(int(net(plan, cache)[0].argmax()))
    return out


def swapped_layer_bytes(net: nn.Module) -> int:
    """weight_bytes of the layers quantize_network put in (none for mode "none")."""
    return sum(weight_bytes(m) for m in net.modules() if type(m).__module__.startswith("bitsandbytes"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default=",".join(QUANT_MODES))
    ap.add_argument("--context", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path = smollm2_gguf_path()

    from models.gguf import GGUFFile
    from models.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_gguf(GGUFFile(path))
    text_ids, prompt_ids = torch.tensor(tokenizer.encode(TEXT)), tokenizer.encode(PROMPT)

    _, fp32 = load_quantized_network(path, "none", device=args.device)
    ref_logp = fp32.forward_full(text_ids).log_softmax(-1)  # (T, vocab)
    ref_greedy = greedy(fp32, prompt_ids, GREEDY_TOKENS)
    float_linear_bytes = sum(weight_bytes(m) for m in fp32.modules() if type(m) is nn.Linear)
    del fp32

    print(f"SmolLM2-135M-Instruct (GGUF), torch {torch.__version__}, {args.threads} threads, {args.device}, "
          f"decode context ~{args.context}, text {len(text_ids)} tokens")
    print(f"{'mode':5} {'load s':>6} {'weights MiB':>11} {'linears MiB':>11} {'ratio':>5} "
          f"{'B=1 ms':>7} {'B=1 tok/s':>9} {'B=64 ms':>8} {'B=64 tok/s':>10} {'agree':>6} {'KL':>6} {'greedy':>7}")
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        _, net = load_quantized_network(path, mode, device=args.device)
        load_s = time.perf_counter() - t0
        total = weight_bytes(net)
        linears = swapped_layer_bytes(net) if mode != "none" else float_linear_bytes
        logp = net.forward_full(text_ids).log_softmax(-1)
        agree = float((logp.argmax(-1) == ref_logp.argmax(-1)).float().mean())
        kl = float((ref_logp.exp() * (ref_logp - logp)).sum(-1).mean())
        same = sum(a == b for a, b in zip(greedy(net, prompt_ids, GREEDY_TOKENS), ref_greedy))
        one, many = decode_seconds(net, 1, args.context), decode_seconds(net, 64, args.context)
        print(f"{mode:5} {load_s:6.1f} {total / 2**20:11.1f} {linears / 2**20:11.1f} "
              f"{linears / float_linear_bytes:5.3f} {one * 1e3:7.1f} {1 / one:9.1f} {many * 1e3:8.1f} "
              f"{64 / many:10.1f} {agree:6.3f} {kl:6.3f} {same:3d}/{GREEDY_TOKENS}")
        del net


if __name__ == "__main__":
    main()
