"""The decoder's layers with their small operators fused in C (models/quant/native/layer_ops.c), for networks
computing in float32 on the q4 / q8 kernels.

A layer in torch is some fifty operators (norms, rotary embedding, cache writes, attention's gathers and
products, the SwiGLU gate, residual adds), each a few microseconds of dispatch. When one or a few sequences
decode, those microseconds are most of a step: in q4, one decode row of the default model took about 14 ms
a step on a 2-core Xeon, of which the quantized products were 7. Here a layer is nine calls:

    x += h; y = norm(x)        genq_add_rms_norm (h: the previous layer's MLP output; none before layer 0)
    qkv = qkv_proj(y)          the q4 / q8 kernel
    q = rope(q); k, v -> cache genq_rope_write (every row's k and v at its position in the paged cache)
    a = attention(q)           decode rows: genq_decode_attention (one query per row over its blocks);
                               prefill chunks: the torch path's own (models/llama.py, Attention._prefill_attention)
    h = o_proj(a)
    x += h; y = norm(x)        genq_add_rms_norm
    g = gate_up_proj(y)
    h = down_proj(silu(gate) * up)   genq_silu_mul

A step of decode rows only (every step of light load) makes one call for all the layers (genq_decode_layers),
which runs the same C functions in the same order: the same bits, without the 270 calls from Python.

Every C operator computes a row as if it were alone, in the same order on every build (layer_ops.c), and the
q kernels are row independent (qdot.c): batch invariance holds as on the torch path. The numbers are not the
torch path's bits (a different exp, another order of sums); a network uses one path or the other for all its
steps, chosen when it is quantized (models/quant/weight_only.py).
"""
from __future__ import annotations

import ctypes
import logging
import operator
from typing import TYPE_CHECKING, cast

import torch

from models import kv_int8
from models.batch import BLOCK_SIZE, KVCache
from models.invariant_ops import project
from models.quant.native import NativeUnavailable, library
from models.quant.qdot import QdotLinear

if TYPE_CHECKING:
    from models.llama import DecoderLayer, LlamaNetwork, RMSNorm, _Step

log = logging.getLogger(__name__)


class _Projection(ctypes.Structure):
    _fields_ = [("codes", ctypes.c_void_p), ("scales", ctypes.c_void_p), ("offsets", ctypes.c_void_p),
                ("out_features", ctypes.c_int64), ("in_features", ctypes.c_int64), ("bits", ctypes.c_int64)]


class _Layer(ctypes.Structure):
    _fields_ = [("input_norm", ctypes.c_void_p), ("post_norm", ctypes.c_void_p), ("qkv", _Projection),
                ("o", _Projection), ("gate_up", _Projection), ("down", _Projection)]


class _DecodeStep(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ("rows", "hidden", "heads", "kv_heads", "head_dim", "inter",
                                                    "n_blocks", "block", "width", "window", "kv_q8")] + \
               [("eps", ctypes.c_float), ("scale", ctypes.c_float)] + \
               [(name, ctypes.c_void_p) for name in ("cos", "sin", "write_index", "tables", "positions", "k_cache",
                                                     "v_cache")]


class FusedOps:
    """The fused operators of the library built for `isa` (models/quant/native), on float32 tensors."""

    def __init__(self, isa: str = "auto", whole_steps: bool = True, layers: bool = True):
        self.isa = isa
        self.layers = layers  # the whole layers fused (q modes, float32); False: the decode attention only
        self.whole_steps = whole_steps  # decode-only steps in one call; False: operator by operator (tests)
        self._lib: ctypes.CDLL | None = None
        self._layers: tuple[list[torch.Tensor], ctypes.Array[_Layer]] | None = None

    def __getstate__(self) -> dict[str, object]:
        # a loaded library and the weights' addresses are not copied: the copy loads (cached) and reads its own
        return {"isa": self.isa, "layers": self.layers, "whole_steps": self.whole_steps, "_lib": None,
                "_layers": None}

    @property
    def lib(self) -> ctypes.CDLL:
        if self._lib is None:
            self._lib = library(self.isa)
        return self._lib

    def add_rms_norm(self, x: torch.Tensor, h: torch.Tensor | None, norm: RMSNorm) -> torch.Tensor:
        """x += h (in place; none when h is None), then norm(x), for x (N, dim) contiguous float32."""
        y = torch.empty_like(x)
        self.lib.genq_add_rms_norm(x.data_ptr(), None if h is None else _f32(h).data_ptr(), x.shape[0], x.shape[1],
                                   norm.weight.data_ptr(), norm.eps, y.data_ptr())
        return y

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """(N, 2 I), gate then up -> silu(gate) * up (N, I)."""
        gate_up = _f32(gate_up)
        n, inter = gate_up.shape[0], gate_up.shape[1] // 2
        out = gate_up.new_empty(n, inter)
        self.lib.genq_silu_mul(gate_up.data_ptr(), n, inter, out.data_ptr())
        return out

    def rope_write(self, qkv: torch.Tensor, step: _Step, k_layer: torch.Tensor, v_layer: torch.Tensor,
                   heads: int, kv_heads: int, head_dim: int) -> torch.Tensor:
        """q rotated (N, heads, head_dim); k rotated and v written, in bfloat16 or in 8 bits (the cache's
        dtype), to the layer's cache at step.write_index."""
        qkv = _f32(qkv)
        n = qkv.shape[0]
        q = qkv.new_empty(n, heads, head_dim)
        if self.lib.genq_rope_write(qkv.data_ptr(), n, heads, kv_heads, head_dim, step.cos.data_ptr(),
                                    step.sin.data_ptr(), step.write_index.data_ptr(), _kv(k_layer).data_ptr(),
                                    _kv(v_layer).data_ptr(), k_layer.shape[1] * k_layer.shape[2],
                                    _q8(k_layer), q.data_ptr()):
            raise MemoryError("fused rotary embedding: no scratch memory")
        return q

    def decode_attention(self, q: torch.Tensor, k_layer: torch.Tensor, v_layer: torch.Tensor, step: _Step,
                         window: int | None) -> torch.Tensor:
        """Attention of the step's decode rows q (B, H, hd) (contiguous) over their blocks; (B, H, hd)."""
        b, heads, hd = q.shape
        tables, positions = step.decode_tables, step.decode_positions
        if tables is None or positions is None:
            raise RuntimeError("fused decode attention for a step prepared without decode tables")
        out = q.new_empty(b, heads, hd)
        if self.lib.genq_decode_attention(_f32(q).data_ptr(), b, heads, k_layer.shape[0], hd,
                                          _kv(k_layer).data_ptr(), _kv(v_layer).data_ptr(), _q8(k_layer),
                                          k_layer.shape[1],
                                          BLOCK_SIZE, tables.data_ptr(), tables.shape[1], positions.data_ptr(),
                                          window or 0, hd ** -0.5, out.data_ptr()):
            raise MemoryError("fused decode attention: no scratch memory")
        return out

    def kv_store(self, x: torch.Tensor, write_index: torch.Tensor, pool: torch.Tensor) -> None:
        """x (N, KV, hd), float32 or bfloat16, each row's heads contiguous (any row stride), written into a
        layer's pool (KV, n_blocks, BLOCK_SIZE, row) at write_index (N,): the torch layers' cache write."""
        n, kvh, hd = x.shape
        if x.dtype not in (torch.float32, torch.bfloat16) or x.stride(2) != 1 or x.stride(1) != hd:
            raise TypeError(f"kv_store takes (N, KV, hd) float32 or bfloat16 rows with contiguous heads, not "
                            f"{x.dtype} of strides {x.stride()}")
        index = _checked(write_index, torch.int64)
        if self.lib.genq_kv_store(x.data_ptr(), int(x.dtype is torch.bfloat16), n, x.stride(0), kvh, hd,
                                  index.data_ptr(), _kv(pool).data_ptr(), pool.shape[1] * pool.shape[2], _q8(pool)):
            raise ValueError(f"kv_store: head_dim {hd} is over the C functions' limit")

    def kv_gather(self, pool: torch.Tensor, blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A layer's pool read at `blocks` (n,), in order: (KV, n * BLOCK_SIZE, hd) in float32 or bfloat16,
        dequantized from an 8-bit pool as models/kv_int8.dequantize_rows does."""
        if dtype not in (torch.float32, torch.bfloat16):
            raise TypeError(f"kv_gather gives float32 or bfloat16, not {dtype}")
        blocks = blocks.to(torch.int64).contiguous()
        kvh, hd = pool.shape[0], kv_int8.head_dim_of(pool.shape[-1]) if _q8(pool) else pool.shape[-1]
        out = torch.empty(kvh, blocks.shape[0] * BLOCK_SIZE, hd, dtype=dtype)
        if self.lib.genq_kv_gather(_kv(pool).data_ptr(), kvh, pool.shape[1] * pool.shape[2], hd, _q8(pool),
                                   blocks.data_ptr(), blocks.shape[0], BLOCK_SIZE, out.data_ptr(),
                                   int(dtype is torch.bfloat16)):
            raise ValueError(f"kv_gather: head_dim {hd} is over the C functions' limit")
        return out

    def forward_layers(self, net: LlamaNetwork, x: torch.Tensor, cache: KVCache, step: _Step) -> torch.Tensor:
        """The decoder layers on x (N, hidden) float32 (consumed: it is the residual stream, updated in place)."""
        return forward_layers(net, self, x, cache, step)

    def layer_table(self, net: LlamaNetwork) -> ctypes.Array[_Layer] | None:
        """The layers' weights' addresses for genq_decode_layers, kept while the same tensors hold them; None when
        a layer is not made of bias-free q4 / q8 projections and float32 norms (the operator path serves it)."""
        layers = cast("list[DecoderLayer]", list(net.layers))
        held = [t for layer in layers for t in _layer_tensors(layer)]
        if self._layers is not None and len(held) == len(self._layers[0]) and \
                all(map(operator.is_, held, self._layers[0])):
            return self._layers[1]
        table = (_Layer * len(layers))()
        for entry, layer in zip(table, layers, strict=True):
            projections = (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj,
                           layer.mlp.down_proj)
            norms = (layer.input_layernorm.weight, layer.post_attention_layernorm.weight)
            quantized = [cast(QdotLinear, p) for p in projections if isinstance(p, QdotLinear) and p.bias is None]
            if len(quantized) < len(projections) or \
                    any(w.dtype is not torch.float32 or not w.is_contiguous() for w in norms):
                self._layers = None
                return None
            entry.input_norm, entry.post_norm = norms[0].data_ptr(), norms[1].data_ptr()
            for name, proj in zip(("qkv", "o", "gate_up", "down"), quantized, strict=True):
                codes, scales, offsets = proj._weights()
                setattr(entry, name, _Projection(codes, scales, offsets, proj.out_features, proj.in_features,
                                                 proj.bits))
        self._layers = (held, table)
        return table

    def decode_layers(self, net: LlamaNetwork, table: ctypes.Array[_Layer], x: torch.Tensor, cache: KVCache,
                      step: _Step) -> None:
        """Every layer of a decode-only step on x (B, hidden), in place (genq_decode_layers)."""
        cfg, eps = net.cfg, cast("DecoderLayer", net.layers[0]).input_layernorm.eps
        tables, positions = step.decode_tables, step.decode_positions
        if tables is None or positions is None:
            raise RuntimeError("fused decode layers for a step prepared without decode tables")
        s = _DecodeStep(x.shape[0], cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                        cfg.intermediate_size, cache.n_blocks, BLOCK_SIZE, tables.shape[1], cfg.sliding_window or 0,
                        _q8(cache.k), eps, cfg.head_dim ** -0.5, step.cos.data_ptr(),
                        step.sin.data_ptr(), step.write_index.data_ptr(), tables.data_ptr(), positions.data_ptr(),
                        _kv(cache.k).data_ptr(), _kv(cache.v).data_ptr())
        if self.lib.genq_decode_layers(table, len(table), ctypes.byref(s), _f32(x).data_ptr()):
            raise MemoryError("fused decode layers: no scratch memory")


def _layer_tensors(layer: DecoderLayer) -> list[torch.Tensor]:
    """The tensors whose addresses a layer's entry of layer_table holds."""
    held: list[torch.Tensor | None] = [layer.input_layernorm.weight, layer.post_attention_layernorm.weight]
    for proj in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj):
        held.extend(proj._buffers.values() if isinstance(proj, QdotLinear) else proj.parameters())
    return [t for t in held if t is not None]


def use_native_attention(net: LlamaNetwork) -> bool:
    """Give a bfloat16 CPU network (none of the q modes') the C decode attention: its decode rows attend over their
    own blocks of the bfloat16 cache with float32 sums (genq_decode_attention), with no gathered copy of the keys
    and values. Returns whether it now does; False where the network is not such a one, or the C library cannot be
    built here (logged: its torch attention serves, as before)."""
    if net.fused_ops is not None or net.dtype is not torch.bfloat16 or net.device.type != "cpu":
        return False
    ops = FusedOps(layers=False)
    try:
        ops.lib  # noqa: B018 (built here, once)
    except (NativeUnavailable, OSError) as e:  # no compiler, a failed build, or a library that does not load
        log.warning("decode attention stays on torch: %s", e)
        return False
    net.fused_ops = ops
    return True


def _f32(t: torch.Tensor) -> torch.Tensor:
    return _checked(t, torch.float32)


def _kv(t: torch.Tensor) -> torch.Tensor:
    """A KV cache (or a layer's view of it): bfloat16 whatever the network computes in (LlamaNetwork.cache_dtype),
    or the 8-bit cache's int8 rows (models/kv_int8.py)."""
    return _checked(t, torch.int8 if t.dtype is torch.int8 else torch.bfloat16)


def _q8(t: torch.Tensor) -> int:
    """1 for the 8-bit cache's rows, 0 for bfloat16 ones (the C functions' q8)."""
    return int(t.dtype is torch.int8)


def _checked(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if t.dtype is not dtype or not t.is_contiguous():
        raise TypeError(f"fused operators take contiguous {str(dtype).removeprefix('torch.')} tensors here, not "
                        f"{t.dtype} {'contiguous' if t.is_contiguous() else 'strided'}")
    return t


def forward_layers(net: LlamaNetwork, ops: FusedOps, x: torch.Tensor, cache: KVCache, step: _Step) -> torch.Tensor:
    """The decoder layers on x (N, hidden) float32 (consumed: it is the residual stream, updated in place)."""
    n, b, window = x.shape[0], step.num_decode, net.cfg.sliding_window
    if b == n and ops.whole_steps:
        table = ops.layer_table(net)
        if table is not None:
            ops.decode_layers(net, table, x, cache, step)
            return x
    h: torch.Tensor | None = None
    for layer in cast("list[DecoderLayer]", list(net.layers)):
        attn, mlp = layer.self_attn, layer.mlp
        heads, kvh, hd = attn.n_heads, attn.n_kv_heads, attn.head_dim
        y = ops.add_rms_norm(x, h, layer.input_layernorm)
        k_pool, v_pool = cache.k[attn.layer], cache.v[attn.layer]  # (KV, n_blocks, BLOCK_SIZE, hd)
        q = ops.rope_write(project(attn.qkv_proj, y, step.tiling), step, k_pool, v_pool, heads, kvh, hd)
        if b == n:
            a = ops.decode_attention(q, k_pool, v_pool, step, window)
        else:
            a = torch.empty_like(q)
            if b:
                a[:b] = ops.decode_attention(q[:b], k_pool, v_pool, step, window)
            for (offset, _row, _start, length), blocks, bias in zip(step.prefills, step.prefill_blocks,
                                                                    step.prefill_biases, strict=True):
                a[offset:offset + length] = attn._prefill_attention(q[offset:offset + length], k_pool, v_pool,
                                                                    blocks, bias, ops)
        h = project(attn.o_proj, a.view(n, heads * hd), step.tiling)
        y = ops.add_rms_norm(x, h, layer.post_attention_layernorm)
        h = project(mlp.down_proj, ops.silu_mul(project(mlp.gate_up_proj, y, step.tiling)), step.tiling)
    if h is not None:
        x += h
    return x
