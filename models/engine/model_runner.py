"""The only part of the engine that touches the device: the KV cache's pool, the step's tensors, the forward.

One step's BatchPlan lays out decode tokens first (one per decoding sequence), then the prefill chunks;
each sequence of the step is one row of the plan's block tables. Logits come back for the decode tokens
that sample and for the last token of each chunk that completes its prompt, in that order, which is
`ScheduledStep.sampled`'s order.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch

from models.batch import NULL_BLOCK, BatchPlan, KVCache
from models.engine.scheduler import ScheduledStep


class Network(Protocol):
    def forward(self, plan: BatchPlan, cache: KVCache) -> torch.Tensor: ...


class ModelRunner:
    """Owns the network's KV cache (a pool of n_blocks blocks) and runs scheduled steps."""

    def __init__(self, network: Any, config: Any, n_blocks: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.network = network
        self.device = torch.device(device)
        self.cache = KVCache.pool(config.num_layers, n_blocks, config.num_kv_heads, config.head_dim, max_len,
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
        rows: list[int] = []  # each token's row of the block tables
        logits_rows: list[int] = []
        tables: list[list[int]] = []
        for seq in step.decodes:
            if seq.samples_at_decode:
                logits_rows.append(len(tokens))
            rows.append(len(tables))
            tokens.append(seq.token_at(seq.num_computed))
            positions.append(seq.num_computed)
            tables.append(seq.blocks)
        prefills = []
        for chunk in step.prefills:
            seq, start, n = chunk.seq, chunk.start, chunk.length
            offset, row = len(tokens), len(tables)
            prefills.append((offset, row, start, n))
            tokens.extend(seq.prompt_ids[start:start + n])
            positions.extend(range(start, start + n))
            rows.extend([row] * n)
            tables.append(seq.blocks)
            if chunk.samples:
                logits_rows.append(offset + n - 1)
        width = max(len(t) for t in tables)
        padded = [t + [NULL_BLOCK] * (width - len(t)) for t in tables]

        def t(xs: list[int]) -> torch.Tensor:
            return torch.tensor(xs, dtype=torch.long, device=self.device)

        return BatchPlan(t(tokens), t(positions), t(rows), len(step.decodes), prefills, t(logits_rows),
                         torch.tensor(padded, dtype=torch.long, device=self.device))

    @torch.inference_mode()
    def run(self, step: ScheduledStep) -> torch.Tensor:
        """The forward: logits (R, vocab), R = len(step.sampled)."""
        return self.network.forward(self.build_plan(step), self.cache)
