"""Weight memory, decode speed and agreement with float32 of each quantization mode on the default model.

    python -m models.quant_bench [--threads 2] [--modes none,int8,int4,bnb_int8,nf4,fp4] [--context 200] [--device cpu]
        [--dtype auto]
    python -m models.quant_bench --layer      # one 576x1536 Linear at batch 1 and 64 instead


For each mode the default GGUF is loaded through models.quant.load_quantized_network, then:
- weights: weight_bytes of the whole network, and of the swapped Linear layers alone;
- decode B=1, 4, 16, 64: one engine decode step (models/batch.py BatchPlan) for B sequences whose contexts
  spread around --context, the best of several runs (the machine is shared: the minimum is the least
  disturbed figure), as tokens per second (B / the step's time);
- agree: the share of positions of a fixed English text where the mode's next-token argmax equals
  float32's (teacher forced, so one early difference does not decide the rest); KL: the mean
  KL(float32 || mode) of the next-token distributions over the same positions, in nats;
- greedy: how many of 32 greedily generated tokens after a prompt equal float32's, position by position.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from models.batch import BatchPlan, KVCache
from models.builtin import smollm2_gguf_path
from models.dtypes import DTYPES
from models.llama import LlamaNetwork
from models.quant import QUANT_MODES, compute_dtype_name, load_quantized_network, quantize_network, weight_bytes

TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
        "movable metal type, oil-based ink and a wooden press adapted from those used for wine. Books became "
        "cheaper and more common, literacy spread across Europe, and ideas travelled faster than ever before.")
PROMPT = "The capital of France is"
GREEDY_TOKENS = 32
BATCHES = (1, 4, 16, 64)  # decoding sequences per step


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of `repeat` runs, after one warm-up run."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def decode_step(net: LlamaNetwork, cache: KVCache, batch: int, context: int) -> Callable[[], object]:
    """One decode step of `batch` sequences in odd (non-adjacent) slots, contexts context-20..context+19."""
    plan = BatchPlan(token_ids=torch.randint(0, net.cfg.vocab_size, (batch,)),
                     positions=context - 20 + torch.arange(batch) % 40, slots=torch.arange(batch) * 2 + 1,
                     num_decode=batch, prefills=[], logits_rows=torch.arange(batch))
    return lambda: net(plan, cache)


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
    return sum(weight_bytes(m) for m in net.modules()
               if type(m).__module__.startswith(("bitsandbytes", "models.quant.")))


def layer_table(modes: list[str], device: str, rounds: int) -> None:
    """Forward time of one 576 -> 1536 Linear (the default model's hidden size to its MLP width) per mode."""
    torch.manual_seed(0)
    reference = nn.Linear(576, 1536).eval()
    layers = {}
    for mode in modes:
        layers[mode] = nn.Sequential(nn.Linear(576, 1536)).eval()
        layers[mode].load_state_dict({f"0.{k}": v for k, v in reference.state_dict().items()})
        quantize_network(layers[mode], mode, device)
    print(f"Linear 576 -> 1536, torch {torch.__version__}, {torch.get_num_threads()} threads, {device}: "
          "best ms per forward; relative error of the output")
    for b in (1, 64):
        x = torch.randn(b, 576, device=device)
        best = dict.fromkeys(modes, float("inf"))
        with torch.inference_mode():
            want = reference.to(device)(x)
            for _ in range(rounds):
                for mode in modes:
                    best[mode] = min(best[mode], best_time(partial(layers[mode], x), repeat=50))
            errors = {m: float((layers[m](x) - want).norm() / want.norm()) for m in modes}
        print(f"  B={b:2d}  " + "  ".join(f"{m} {best[m] * 1e3:6.3f} ms ({errors[m]:.3f})" for m in modes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default=",".join(QUANT_MODES))
    ap.add_argument("--context", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds, modes interleaved; the best is kept")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", help="compute dtype of every mode (models/dtypes.py; auto: float32 "
                    "for q4 / q8, else the device's native one); the agreement reference stays float32")
    ap.add_argument("--layer", action="store_true", help="time one 576x1536 Linear instead of the model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.layer:
        return layer_table(args.modes.split(","), args.device, args.rounds)
    torch.manual_seed(0)
    path = smollm2_gguf_path()
    modes = args.modes.split(",")
    dtypes = {mode: DTYPES[compute_dtype_name(mode, args.dtype, args.device)] for mode in modes}

    from models.gguf import GGUFFile
    from models.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_gguf(GGUFFile(path))
    text_ids, prompt_ids = torch.tensor(tokenizer.encode(TEXT)), tokenizer.encode(PROMPT)
    _, fp32 = load_quantized_network(path, "none", device=args.device)
    ref_logp = fp32.forward_full(text_ids).log_softmax(-1)  # (T, vocab)
    ref_greedy = greedy(fp32, prompt_ids, GREEDY_TOKENS)
    float_linear_bytes = sum(weight_bytes(m) for m in fp32.modules() if type(m) is nn.Linear)
    del fp32

    nets, rows = {}, {}
    for mode in modes:
        t0 = time.perf_counter()
        _, net = load_quantized_network(path, mode, dtype=dtypes[mode], device=args.device)
        load_s = time.perf_counter() - t0
        linears = swapped_layer_bytes(net) if mode != "none" else \
            sum(weight_bytes(m) for m in net.modules() if type(m) is nn.Linear)
        logp = net.forward_full(text_ids).log_softmax(-1)
        rows[mode] = dict(
            load_s=load_s, total=weight_bytes(net), linears=linears,
            agree=float((logp.argmax(-1) == ref_logp.argmax(-1)).float().mean()),
            kl=float((ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()),
            same=sum(a == b for a, b in zip(greedy(net, prompt_ids, GREEDY_TOKENS), ref_greedy, strict=False)))
        nets[mode] = net

    # every mode's networks stay loaded and the rounds interleave them, so that a burst of load from other
    # processes on the machine slows one round of every mode rather than all the runs of one mode
    best = {(mode, b): float("inf") for mode in modes for b in BATCHES}
    for b in BATCHES:
        cfg = nets[modes[0]].cfg
        caches = {}  # one per compute dtype
        for dt in set(dtypes.values()):
            caches[dt] = KVCache.allocate(cfg.num_layers, 2 * b + 1, cfg.num_kv_heads, args.context + 40,
                                          cfg.head_dim, dt, nets[modes[0]].device)
            caches[dt].k.normal_()
            caches[dt].v.normal_()
        for _ in range(args.rounds):
            for mode in modes:
                step = decode_step(nets[mode], caches[dtypes[mode]], b, args.context)
                best[mode, b] = min(best[mode, b], best_time(step, repeat=max(3, 24 // b)))
        del caches

    print(f"SmolLM2-135M-Instruct (GGUF), torch {torch.__version__}, {args.threads} threads, {args.device}, "
          f"decode context ~{args.context}, text {len(text_ids)} tokens")
    print(f"{'mode':5} {'dtype':>8} {'load s':>6} {'weights MiB':>11} {'linears MiB':>11} {'ratio':>5} "
          + " ".join(f"{f'B={b} tok/s':>11}" for b in BATCHES) + f" {'agree':>6} {'KL':>6} {'greedy':>7}")
    for mode in modes:
        r = rows[mode]
        dtype_name = str(dtypes[mode]).removeprefix("torch.")
        print(f"{mode:5} {dtype_name:>8} {r['load_s']:6.1f} {r['total'] / 2**20:11.1f} {r['linears'] / 2**20:11.1f} "
              f"{r['linears'] / float_linear_bytes:5.3f} " + " ".join(f"{b / best[mode, b]:11.1f}" for b in BATCHES)
              + f" {r['agree']:6.3f} {r['kl']:6.3f} {r['same']:3d}/{GREEDY_TOKENS}")


if __name__ == "__main__":
    main()
