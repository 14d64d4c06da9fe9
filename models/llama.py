"""The Llama-family decoder (Llama, Mistral, Qwen2, SmolLM) as a plain torch module.

Pre-norm decoder layers: x + attn(rms_norm(x)), then x + mlp(rms_norm(x)); grouped-query attention with
rotary embeddings; SwiGLU MLP. Two fusions for speed, made when weights are loaded (models/weights.py):
q, k and v projections are one Linear (`qkv_proj`, rows q then k then v) and the MLP's gate and up
projections are one Linear (`gate_up_proj`, rows gate then up).

`forward(plan, cache)` runs one engine step (models/batch.py): the step's tokens are a flat (N,) list,
decode tokens first, then prefill chunks. Every layer writes each token's k/v at its position in its
row's blocks of the paged cache, then attends:
- the decode tokens in groups of similar length (`decode_groups`), each group in one batched attention over
  its rows' blocks (gathered in table order) up to its longest position, with a mask hiding each row's
  positions beyond its own;
- each prefill chunk causally over its own row's positions [0, start + length).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from models import kv_int8
from models.batch import BLOCK_SIZE, NULL_BLOCK, BatchPlan, KVCache
from models.config import ModelConfig
from models.invariant_ops import (
    DECODE_KEY_BLOCK,
    PREFILL_KEY_BLOCK,
    PREFILL_QUERY_TILE,
    RowTiling,
    attend,
    key_span,
    project,
)
from models.rope import RotaryEmbedding

if DECODE_KEY_BLOCK % BLOCK_SIZE or PREFILL_KEY_BLOCK % BLOCK_SIZE:
    raise ImportError("attention's key blocks must be whole cache blocks")


def attention_bias(q_pos: torch.Tensor, keys: int, window: int | None, dtype: torch.dtype) -> torch.Tensor:
    """(Q, keys) additive mask for queries at positions q_pos (Q,): 0 where a query sees the key (causal, and
    within the sliding window if any), -inf where it does not."""
    k = torch.arange(keys, device=q_pos.device)[None, :]
    allowed = k <= q_pos[:, None]
    if window is not None:
        allowed &= k > q_pos[:, None] - window
    return torch.zeros(allowed.shape, dtype=dtype, device=q_pos.device).masked_fill_(~allowed, float("-inf"))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


@dataclass
class _DecodeGroup:
    """Decode rows attended together: each reads `length` keys (its longest row's, in whole key blocks)."""

    rows: torch.Tensor | None  # (G,) indices into the step's decode rows; None: all of them, in order
    blocks: torch.Tensor  # (G * nb,) the rows' first nb blocks, row-major (null-padded)
    length: int  # keys per row: nb * BLOCK_SIZE
    bias: torch.Tensor  # (KV * G, group, length) float, kv-major: 0 = attend, -inf = hidden


# A group of decode rows costs a few more small products per layer (about 16 rows' worth of one key block, on
# a 2-core CPU); rows are split into groups only where reading fewer padded keys saves more than that.
GROUP_OVERHEAD_BLOCKS = 16


def decode_groups(spans: list[int], overhead: int = GROUP_OVERHEAD_BLOCKS) -> list[list[int]]:
    """Rows (indices into `spans`, each row's key blocks) cut into groups, each padded to its longest row: the
    cut that minimizes the blocks read (rows x their group's longest span) plus `overhead` a group. One group
    when the rows are alike (a lone sequence always). Rows keep their order within a group."""
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    n = len(order)
    best = [0] * (n + 1)  # best[j]: the least cost of the first j rows (in span order)
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = spans[order[j - 1]]
        best[j], cut[j] = min((best[i] + (j - i) * longest + overhead, i) for i in range(j))
    groups: list[list[int]] = []
    j = n
    while j:
        groups.append(sorted(order[cut[j]:j]))
        j = cut[j]
    return groups[::-1]


class NativeOps(Protocol):
    """What the network asks of its fused C operators (models/fused_layers.FusedOps, which the network does not
    import: that module reads the network's layers, so the dependency runs one way)."""

    layers: bool  # True: the whole layers run on the operators; False: only the decode attention

    def add_rms_norm(self, x: torch.Tensor, h: torch.Tensor | None, norm: RMSNorm) -> torch.Tensor: ...

    def decode_attention(self, q: torch.Tensor, k_layer: torch.Tensor, v_layer: torch.Tensor, step: _Step,
                         window: int | None) -> torch.Tensor: ...

    def forward_layers(self, net: LlamaNetwork, x: torch.Tensor, cache: KVCache, step: _Step) -> torch.Tensor: ...

    def kv_store(self, x: torch.Tensor, write_index: torch.Tensor, pool: torch.Tensor) -> None: ...

    def kv_gather(self, pool: torch.Tensor, blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor: ...


@dataclass
class _Step:
    """What every layer of one forward needs, computed once per step."""

    write_index: torch.Tensor  # (N,) each token's flat index into a layer's n_blocks * BLOCK_SIZE positions
    cos: torch.Tensor  # (N, 1, head_dim)
    sin: torch.Tensor  # (N, 1, head_dim)
    num_decode: int
    tiling: RowTiling  # how the step's rows are cut for projections (models/invariant_ops.py)
    decode_groups: list[_DecodeGroup]  # the decode rows, in groups of similar length (see decode_groups)
    prefills: list[tuple[int, int, int, int]]  # (offset, row, start, length)
    prefill_blocks: list[torch.Tensor]  # per chunk, (S / BLOCK_SIZE,) its row's first blocks (null-padded)
    prefill_biases: list[torch.Tensor]  # (1, length * group, S) float: 0 = attend, -inf = hidden
    # for the fused layers (models/fused_layers.py), in place of decode_groups: the decode rows' block tables
    # (B, W) and positions (B,), int64
    decode_tables: torch.Tensor | None = None
    decode_positions: torch.Tensor | None = None
    fused: NativeOps | None = None  # the network's fused operators, when it has them


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer, self.window = layer, cfg.sliding_window
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, q_size + 2 * kv_size, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(q_size, cfg.hidden_size, bias=cfg.attention_out_bias)

    def forward(self, x: torch.Tensor, cache: KVCache, step: _Step) -> torch.Tensor:
        n, h, kvh, hd = x.shape[0], self.n_heads, self.n_kv_heads, self.head_dim
        qkv = project(self.qkv_proj, x, step.tiling)
        # q's and k's heads rotated together (elementwise: the same bits as one by one, in half the ops)
        qk = RotaryEmbedding.apply(qkv[:, :(h + kvh) * hd].view(n, h + kvh, hd), step.cos, step.sin)
        q, k = qk[:, :h], qk[:, h:]  # (N, H, hd), (N, KV, hd)
        v = qkv[:, (h + kvh) * hd:]
        k_pool, v_pool = cache.k[self.layer], cache.v[self.layer]  # (KV, n_blocks, BLOCK_SIZE, hd) views
        # every token's k/v at its own position: (KV, n_blocks * BLOCK_SIZE, hd) <- (KV, N, hd)
        v = v.view(n, kvh, hd)
        if k_pool.dtype is torch.int8 and step.fused is not None:  # the 8-bit cache in one C call per pool
            step.fused.kv_store(k, step.write_index, k_pool)
            step.fused.kv_store(v, step.write_index, v_pool)
        else:
            k, v = k.transpose(0, 1), v.transpose(0, 1)
            if k_pool.dtype is torch.int8:  # the 8-bit cache: each row's codes and scale (models/kv_int8.py)
                k, v = kv_int8.quantize_rows(k), kv_int8.quantize_rows(v)
            k_pool.view(kvh, -1, k_pool.shape[-1]).index_copy_(1, step.write_index, k)
            v_pool.view(kvh, -1, v_pool.shape[-1]).index_copy_(1, step.write_index, v)

        b = step.num_decode
        if b == n:  # a step of decode tokens only: no buffer to gather the parts in
            return project(self.o_proj, self._decode_attention(q, k_pool, v_pool, step).view(n, h * hd),
                           step.tiling)
        out = torch.empty(n, h, hd, dtype=x.dtype, device=x.device)
        if b:
            out[:b] = self._decode_attention(q[:b], k_pool, v_pool, step)
        for (offset, _row, _start, length), blocks, bias in zip(step.prefills, step.prefill_blocks,
                                                                step.prefill_biases, strict=True):
            out[offset:offset + length] = self._prefill_attention(q[offset:offset + length], k_pool, v_pool,
                                                                  blocks, bias, step.fused)
        return project(self.o_proj, out.view(n, h * hd), step.tiling)

    def _prefill_attention(self, q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
                           blocks: torch.Tensor, bias: torch.Tensor, ops: NativeOps | None = None) -> torch.Tensor:
        """Attention of one prefill chunk's T queries q (T, H, hd) over the first S keys of its row, held in
        `blocks` (S / BLOCK_SIZE,) of the pool (k_pool, v_pool: (KV, n_blocks, BLOCK_SIZE, hd)); bias
        (1, T * group, S): 0 = attend, -inf = hidden. ops: the fused operators, which read an 8-bit pool.

        Per kv head, its query heads' rows stacked (t-major) against the row's keys: a query row's result
        does not depend on how its prompt was cut into chunks (models/invariant_ops.py), which torch's
        fused attention does not promise (measured: bfloat16 logits moved by up to 0.3 between a prompt
        prefilled whole and in three chunks).
        """
        t, h, hd = q.shape
        keys = bias.shape[-1]
        kvh, group = self.n_kv_heads, self.n_heads // self.n_kv_heads
        # the row's keys in position order, in q's dtype (the fused layers' cache is bfloat16 under float32 q)
        k = _read_pool(k_pool, blocks, kvh, keys, q.dtype, ops)
        v = _read_pool(v_pool, blocks, kvh, keys, q.dtype, ops)
        rows = q.view(t, kvh, group, hd).transpose(0, 1).reshape(kvh, t * group, hd)
        o = attend(rows, k, v, bias, hd ** -0.5, PREFILL_KEY_BLOCK, PREFILL_QUERY_TILE)  # (KV, T * group, hd)
        return o.reshape(kvh, t, group, hd).transpose(0, 1).reshape(t, h, hd)

    def _decode_attention(self, q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
                          step: _Step) -> torch.Tensor:
        """Attention of the B decode queries q (B, H, hd) over their rows' blocks; returns (B, H, hd).

        One query per sequence, so each kv head's group of query heads plays the query-length dim: per
        (kv head, row), q (group, hd) against k, v (length, hd), and no copy of k/v per query head.
        Rows go in groups of similar length (decode_groups), each padded to its longest row. A group's blocks
        are gathered once per layer, in table order, into (KV * G, length, hd): which
        blocks of the pool a row holds never changes its keys' order or values. Batched matmuls rather than
        scaled_dot_product_attention: faster on CPU for these shapes, and their reductions are at fixed
        shapes (models/invariant_ops.py).
        """
        if step.fused is not None:  # the C attention (models/fused_layers.py): float32 sums over the bf16 cache
            return step.fused.decode_attention(q.float().contiguous(), k_pool, v_pool, step, self.window).to(q.dtype)
        groups = step.decode_groups
        if not groups:  # set by _prepare whenever the step decodes
            raise RuntimeError("decode attention for a step without decode tokens")
        if len(groups) == 1:  # every row, in order
            return self._attend_group(q, k_pool, v_pool, groups[0])
        out = q.new_empty(q.shape[0], self.n_heads, self.head_dim)
        for g in groups:
            if g.rows is None:
                raise RuntimeError("a decode group among several names no rows")
            out.index_copy_(0, g.rows, self._attend_group(q.index_select(0, g.rows), k_pool, v_pool, g))
        return out

    def _attend_group(self, q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
                      g: _DecodeGroup) -> torch.Tensor:
        b, kvh, group, hd, length = q.shape[0], self.n_kv_heads, self.n_heads // self.n_kv_heads, self.head_dim, \
            g.length
        k = _read_pool(k_pool, g.blocks, kvh * b, length, q.dtype)  # (KV * G, len, hd)
        v = _read_pool(v_pool, g.blocks, kvh * b, length, q.dtype)
        rows_q = q.reshape(b, kvh, group, hd).transpose(0, 1).reshape(kvh * b, group, hd)
        o = attend(rows_q, k, v, g.bias, hd ** -0.5, DECODE_KEY_BLOCK)  # (KV * G, group, hd)
        return o.view(kvh, b, group, hd).transpose(0, 1).reshape(b, self.n_heads, hd)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, tiling: RowTiling) -> torch.Tensor:
        gate, up = project(self.gate_up_proj, x, tiling).chunk(2, dim=-1)
        return project(self.down_proj, F.silu(gate) * up, tiling)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache, step: _Step) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cache, step)
        return x + self.mlp(self.post_attention_layernorm(x), step.tiling)


class LlamaNetwork(nn.Module):
    """The decoder and its LM head (the embedding matrix itself when the model ties them).

    `fused_ops`: the C operators (models/fused_layers.py). Set with `layers` by models/quant/weight_only.py when
    the network computes in float32 on the q4 / q8 kernels: its layers run on them. Set without `layers` by
    `use_native_attention` on a bfloat16 CPU network: the torch layers, whose decode rows attend in C. None: the
    torch layers only."""

    fused_ops: NativeOps | None = None

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self._rope: RotaryEmbedding | None = None  # made on first use: the module may be built on `meta`

    def _head(self) -> nn.Module:
        """The LM head as a Linear (a view of the embedding matrix when the model ties them)."""
        if self.lm_head is not None:
            return self.lm_head
        head = self.__dict__.get("_tied_head")  # kept out of the submodules: no second copy in state_dict
        if not isinstance(head, nn.Linear) or head.weight is not self.embed_tokens.weight:
            head = nn.Linear(self.cfg.hidden_size, self.cfg.vocab_size, bias=False, device="meta")
            head.weight = self.embed_tokens.weight
            self.__dict__["_tied_head"] = head
        return head

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    @property
    def cache_dtype(self) -> torch.dtype:
        """The KV cache's dtype: the compute dtype, except bfloat16 under the fused layers (models/fused_layers.py),
        whose attention reads bfloat16 keys and values into float32 sums: half the cache's bytes and memory."""
        return torch.bfloat16 if self.fused_ops is not None and self.fused_ops.layers else self.dtype

    def cache_dtype_for(self, kv_quantization: str) -> torch.dtype:
        """The KV cache's dtype under an engine's kv_quantization: "none", cache_dtype; "int8", the 8-bit cache
        (models/kv_int8.py); "auto", int8 where the C attention reads the cache (a CPU network with fused
        operators: half the bytes to hold and to read), else cache_dtype."""
        if kv_quantization == "int8" or (kv_quantization == "auto" and self.fused_ops is not None):
            return torch.int8
        if kv_quantization in ("auto", "none"):
            return self.cache_dtype
        raise ValueError(f"kv_quantization must be auto, int8 or none, not {kv_quantization!r}")

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: the norms', which stay in it when the projections are quantized (models/quant/)."""
        return self.norm.weight.dtype

    def new_cache(self, n_slots: int, max_len: int) -> KVCache:
        """An empty KV cache of n_slots fixed slots of max_len positions, on this network's device and in its
        cache_dtype (for plans that name slots; the engine keeps a pool and hands in block tables)."""
        c = self.cfg
        return KVCache.allocate(c.num_layers, n_slots, c.num_kv_heads, max_len, c.head_dim, self.cache_dtype,
                                self.device)

    @torch.inference_mode()
    def forward(self, plan: BatchPlan, cache: KVCache) -> torch.Tensor:
        """Run one step: write the step's k/v into `cache`; logits (R, vocab) float32 for plan.logits_rows."""
        step = self._prepare(plan, cache)
        x = self.embed_tokens(plan.token_ids.to(self.device))  # (N, hidden)
        if self.fused_ops is not None and self.fused_ops.layers:
            x = self.fused_ops.forward_layers(self, x.contiguous(), cache, step)
            x = self.fused_ops.add_rms_norm(x[plan.logits_rows.to(self.device)], None, self.norm)
        else:
            for layer in self.layers:
                x = layer(x, cache, step)
            x = self.norm(x[plan.logits_rows.to(self.device)])  # (R, hidden): only the rows that need logits
        logits = project(self._head(), x, RowTiling.uniform(x.shape[0], self.dtype))
        return logits.float()

    def forward_full(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (T, vocab) for every position of one sequence (T,), through a temporary one-slot cache."""
        t = int(input_ids.shape[0])
        positions = torch.arange(t)
        plan = BatchPlan(token_ids=input_ids.long(), positions=positions, slots=torch.zeros(t, dtype=torch.long),
                         num_decode=0, prefills=[(0, 0, 0, t)], logits_rows=positions)
        return self.forward(plan, self.new_cache(1, t))

    def _prepare(self, plan: BatchPlan, cache: KVCache) -> _Step:
        n, dev = plan.num_tokens, self.device
        if plan.positions.shape != (n,) or plan.slots.shape != (n,):
            raise ValueError(f"plan: token_ids, positions and slots must all be ({n},)")
        if not 0 <= plan.num_decode <= n:
            raise ValueError(f"plan: num_decode {plan.num_decode} is outside [0, {n}]")
        if n and int(plan.positions.max()) >= cache.max_len:
            raise ValueError(f"plan: a position is beyond the cache's max_len {cache.max_len}")
        covered = plan.num_decode + sum(length for _, _, _, length in plan.prefills)
        if covered != n:
            raise ValueError(f"plan: decode tokens and prefill chunks cover {covered} tokens, not {n}")
        if self._rope is None or self._rope.device != dev or self._rope.dtype != self.dtype:
            self._rope = RotaryEmbedding(self.cfg, dev, self.dtype)
        tables = plan.tables(cache).to(dev)
        positions, slots = plan.positions.to(dev), plan.slots.to(dev)
        write_index = BatchPlan(plan.token_ids, positions, slots, plan.num_decode, plan.prefills, plan.logits_rows,
                                tables).cache_index(cache)
        if self.fused_ops is not None:
            write_index = write_index.to(torch.int64).contiguous()
        cos, sin = self._rope.cos_sin(positions)
        window = self.cfg.sliding_window
        kvh, group = self.cfg.num_kv_heads, self.cfg.num_heads // self.cfg.num_kv_heads

        b = plan.num_decode
        groups: list[_DecodeGroup] = []
        decode_tables = decode_positions = None
        if b and self.fused_ops is not None:  # the fused attention reads each row's own blocks and positions
            decode_tables = tables[slots[:b]].to(torch.int64).contiguous()
            decode_positions = positions[:b].to(torch.int64).contiguous()
        elif b:
            pos = positions[:b]
            spans = [key_span(p + 1, DECODE_KEY_BLOCK) // DECODE_KEY_BLOCK for p in plan.positions[:b].tolist()]
            parts = decode_groups(spans, GROUP_OVERHEAD_BLOCKS)
            for part in parts:
                rows = None if len(parts) == 1 else torch.tensor(part, dtype=torch.long, device=dev)
                length = max(spans[i] for i in part) * DECODE_KEY_BLOCK
                row_pos = pos if rows is None else pos[rows]
                row_slots = slots[:b] if rows is None else slots[:b][rows]
                blocks = _first_blocks(tables[row_slots], length // BLOCK_SIZE).reshape(-1)
                bias = attention_bias(row_pos, length, window, self.dtype)  # (G, length)
                # every query head of a row shares the row's mask: (KV, G, group, len) -> (KV * G, group, len)
                bias = bias[None, :, None, :].expand(kvh, -1, group, -1).reshape(-1, group, length)
                groups.append(_DecodeGroup(rows, blocks, length, bias))

        prefill_blocks: list[torch.Tensor] = []
        biases: list[torch.Tensor] = []
        for _offset, row, start, length in plan.prefills:
            if length <= 0 or start < 0 or start + length > cache.max_len:
                raise ValueError(f"plan: prefill chunk (start {start}, length {length}) does not fit the cache")
            keys = key_span(start + length, PREFILL_KEY_BLOCK)
            prefill_blocks.append(_first_blocks(tables[row:row + 1], keys // BLOCK_SIZE)[0])
            q_pos = torch.arange(start, start + length, device=dev)
            bias = attention_bias(q_pos, keys, window, self.dtype)  # (T, S)
            biases.append(bias.repeat_interleave(group, dim=0)[None])  # rows t-major: (1, T * group, S)
        tiling = RowTiling.for_step(n, b, self.dtype)
        return _Step(write_index, cos, sin, b, tiling, groups, list(plan.prefills), prefill_blocks, biases,
                     decode_tables, decode_positions, self.fused_ops)


def _read_pool(pool: torch.Tensor, blocks: torch.Tensor, rows: int, length: int, dtype: torch.dtype,
               ops: NativeOps | None = None) -> torch.Tensor:
    """A layer's pool (KV, n_blocks, BLOCK_SIZE, width) read at `blocks`, in order, as (rows, length, hd) in
    `dtype`: the values themselves, or the 8-bit cache's dequantized (models/kv_int8.py; in one C call where
    the network has its fused operators, the same values)."""
    if pool.dtype is torch.int8 and ops is not None:
        return ops.kv_gather(pool, blocks, dtype).view(rows, length, -1)
    gathered = pool.index_select(1, blocks).view(rows, length, pool.shape[-1])
    return kv_int8.dequantize_rows(gathered, dtype) if pool.dtype is torch.int8 else gathered.to(dtype)


def _first_blocks(tables: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, width): the tables' first `width` blocks, padded with the null block where a table is narrower
    (positions there are hidden by the mask; the null block keeps their keys finite)."""
    if tables.shape[1] >= width:
        return tables[:, :width]
    return F.pad(tables, (0, width - tables.shape[1]), value=NULL_BLOCK)
