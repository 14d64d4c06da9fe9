"""A toy network, tokenizer and chat template for engine tests that do not need a real model.

The toy network is a one-layer attention model that honours the BatchPlan/KVCache contract exactly:
it writes each token's key and value at its position in its row's blocks and attends to its own row's
positions 0..position only. A scheduler or runner mistake (wrong position, block, chunk or shared prefix)
changes its output, so "together == alone" tests are meaningful with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.batch import BatchPlan, KVCache

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?ABCDEFGHIJKLMNOPQ"  # ids 2.. ; 0 is EOS, 1 is BOS
TOY_VOCAB = 2 + len(ALPHABET)


@dataclass
class ToyConfig:
    num_layers: int = 1
    num_kv_heads: int = 1
    head_dim: int = 16
    max_position_embeddings: int = 512
    vocab_size: int = TOY_VOCAB


class ToyNetwork(torch.nn.Module):
    def __init__(self, config: ToyConfig, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = config.head_dim
        self.d = d
        self.emb = torch.randn(config.vocab_size, d, generator=g)
        self.pos = torch.randn(config.max_position_embeddings, d, generator=g) * 0.5
        self.wq, self.wk, self.wv = (torch.randn(d, d, generator=g) / math.sqrt(d) for _ in range(3))
        self.out = torch.randn(d, config.vocab_size, generator=g) * 2
        self.fail_next = False  # tests set it to make the next forward raise

    def forward(self, plan: BatchPlan, cache: KVCache) -> torch.Tensor:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("toy network failure")
        x = self.emb[plan.token_ids] + self.pos[plan.positions]  # (N, d)
        q, k, v = x @ self.wq, x @ self.wk, x @ self.wv
        k_pool, v_pool = cache.k[0, 0], cache.v[0, 0]  # (n_blocks, BLOCK_SIZE, d)
        index = plan.cache_index(cache)
        k_pool.view(-1, self.d)[index] = k.to(cache.k.dtype)
        v_pool.view(-1, self.d)[index] = v.to(cache.v.dtype)
        tables = plan.tables(cache)
        rows = []
        for i in plan.logits_rows.tolist():
            row, pos = int(plan.slots[i]), int(plan.positions[i])
            keys = k_pool[tables[row]].reshape(-1, self.d)[:pos + 1]  # (pos+1, d): this row's positions 0..pos
            vals = v_pool[tables[row]].reshape(-1, self.d)[:pos + 1]
            att = torch.softmax(keys @ q[i] / math.sqrt(self.d), dim=0)
            rows.append(att @ vals + x[i])
        if not rows:  # a step of unfinished prompt chunks only: keys and values written, no logits
            return torch.empty(0, self.out.shape[1])
        return torch.stack(rows) @ self.out  # (R, vocab)


class ToyTokenizer:
    eos_token_ids = [0]
    bos_token_id = 1

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [2 + ALPHABET.index(c) for c in text if c in ALPHABET]
        return [self.bos_token_id] + ids if add_special_tokens else ids

    def decode(self, ids: list[int]) -> str:
        return "".join(ALPHABET[i - 2] for i in ids if i >= 2)


class ToyDetokenizer:
    def __init__(self, tokenizer: ToyTokenizer, prompt_ids: list[int] | None = None):
        self.tokenizer = tokenizer

    def push(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def flush(self) -> str:
        return ""


class ToyTemplate:
    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        turns = "".join(f"{m['role']}. {m['content']}!" for m in messages)
        return turns + ("assistant." if add_generation_prompt else "")
