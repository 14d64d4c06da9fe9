"""The only part of the engine that touches the device: the KV cache, the step's tensors, the forward.

One step's BatchPlan lays out decode tokens first (one per decoding sequence), then the prefill chunks;
logits come back for the decode tokens and for the last token of each chunk that completes its prompt,
in that order, which is `ScheduledStep.sampled`'s order.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch

from models.batch import BatchPlan, KVCache
from models.engine.scheduler import ScheduledStep


class Network(Protocol):
    def forward(self, plan: BatchPlan, cache: KVCache) -> torch.Tensor: ...


class ModelRunner:
    """Owns the network's KV cache (n_slots x max_len positions) and runs scheduled steps."""

    def __init__(self, network: Any, config: Any, n_slots: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.network = network
        self.device = torch.device(device)
        self.cache = KVCache.allocate(config.num_layers, n_slots, config.num_kv_heads, max_len, config.head_dim,
                                      dtype=dtype, device=self.device)

    def make_generator(self, seed: int | None) -> torch.Generator:
        """A request's own random stream (on the device its logits are on)."""
        g = torch.Generator(device=self.device)
        if seed is None:
            g.seed()
        else:
            g.manual_seed(seed)
        return g

    def build_plan(self, step: ScheduledStep) -> BatchPlan:
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        rows: list[int] = []
        for seq in step.decodes:
            rows.append(len(tokens))
            tokens.append(seq.last_token())
            positions.append(seq.num_computed)
            slots.append(seq.held_slot)
        prefills = []
        for chunk in step.prefills:
            seq, start, n = chunk.seq, chunk.start, chunk.length
            offset = len(tokens)
            prefills.append((offset, seq.held_slot, start, n))
            tokens.extend(seq.prompt_ids[start:start + n])
            positions.extend(range(start, start + n))
            slots.extend([seq.held_slot] * n)
            if chunk.completes_prompt:
                rows.append(offset + n - 1)

        def t(xs: list[int]) -> torch.Tensor:
            return torch.tensor(xs, dtype=torch.long, device=self.device)

        return BatchPlan(t(tokens), t(positions), t(slots), len(step.decodes), prefills, t(rows))

    @torch.inference_mode()
    def run(self, step: ScheduledStep) -> torch.Tensor:
        """Make the step's prefix copies, then the forward: logits (R, vocab), R = len(step.sampled)."""
        for src, dst, length in step.copies:
            self.cache.copy_prefix(src, dst, length)
        return self.network.forward(self.build_plan(step), self.cache)
