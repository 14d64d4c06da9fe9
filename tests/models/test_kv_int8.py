"""The 8-bit KV cache (models/kv_int8.py): what a row keeps of its values, the C writer's bytes against the
torch functions', the C attention over it, which cache an engine takes, and the default model's answers with it
against a bfloat16 cache."""
from __future__ import annotations

import copy

import pytest
import torch
from heavy_dtypes import HEAVY_DTYPES
from test_native_layers import Step, randn

from models import kv_int8
from models.batch import BLOCK_SIZE, KVCache
from models.config import ModelConfig
from models.engine import Engine, EngineConfig
from models.engine.engine import EngineConfigError
from models.fused_layers import FusedOps, use_native_attention

TINY = ModelConfig(architecture="llama", vocab_size=96, hidden_size=48, intermediate_size=80, num_layers=2,
                   num_heads=6, num_kv_heads=2, head_dim=8, rms_norm_eps=1e-5, rope_theta=10000.0,
                   max_position_embeddings=256)


def test_a_row_comes_back_within_half_a_code_step_of_its_largest_value():
    x = torch.cat([randn(200, 64, scale=3.0), randn(20, 64, seed=1, scale=1e-20), randn(20, 64, seed=2, scale=1e4),
                   torch.zeros(4, 64)])
    x[7, 5] = 250.0  # an outlier: its row's step grows with it, the other rows keep theirs
    rows = kv_int8.quantize_rows(x)
    assert rows.dtype is torch.int8 and rows.shape == (x.shape[0], 64 + kv_int8.SCALE_BYTES)
    codes = rows[:, :64].int()
    assert int(codes.abs().amax()) == 127 and bool((codes.abs().amax(-1)[:-4] == 127).all())  # the largest is +-127
    back = kv_int8.dequantize_rows(rows)
    step = x.abs().amax(-1, keepdim=True) / 127
    assert bool(((back - x).abs() <= step / 2 * (1 + 1e-5)).all())
    assert bool((back[-4:] == 0).all()) and bool((rows[-4:] == 0).all())  # a zero row: codes and scale 0
    assert kv_int8.dequantize_rows(rows, torch.bfloat16).dtype is torch.bfloat16


def test_the_c_writer_stores_the_bytes_of_the_torch_functions_and_its_attention_reads_them():
    """genq_rope_write into an 8-bit pool: v rows are quantize_rows(v) byte for byte, and k rows are
    quantize_rows of the rotated k (read back from a q head fed the same values: the same rotation). The C
    attention over that pool is softmax attention over dequantize_rows of its rows."""
    heads, kvh, hd = 9, 3, 64
    ops = FusedOps()
    tables = torch.tensor([[3, 1], [2, 4]], dtype=torch.int64)
    step = Step([100, 9], tables, hd)
    k = kv_int8.quantize_rows(randn(kvh, 5, BLOCK_SIZE, hd, seed=5, scale=3.0))
    v = kv_int8.quantize_rows(randn(kvh, 5, BLOCK_SIZE, hd, seed=6, scale=3.0))
    qkv = randn(2, (heads + 2 * kvh) * hd, seed=7, scale=4.0).view(2, heads + 2 * kvh, hd)
    qkv[:, 0] = qkv[:, heads]  # q head 0 holds kv head 0's key: its rotation comes back in q
    q = ops.rope_write(qkv.reshape(2, -1).contiguous(), step, k, v, heads, kvh, hd)
    flat_k, flat_v = k.view(kvh, -1, hd + 4), v.view(kvh, -1, hd + 4)
    written_v = flat_v[:, step.write_index].transpose(0, 1)  # (rows, kvh, hd + 4)
    assert torch.equal(written_v, kv_int8.quantize_rows(qkv[:, heads + kvh:]))
    assert torch.equal(flat_k[0, step.write_index], kv_int8.quantize_rows(q[:, 0]))

    keys, values = kv_int8.dequantize_rows(flat_k), kv_int8.dequantize_rows(flat_v)
    out = ops.decode_attention(q, k, v, step, None)
    for r, p in enumerate(step.decode_positions.tolist()):
        index = tables[r, torch.arange(p + 1) // BLOCK_SIZE] * BLOCK_SIZE + torch.arange(p + 1) % BLOCK_SIZE
        rows = q[r].view(kvh, heads // kvh, hd)
        want = torch.softmax(rows @ keys[:, index].transpose(1, 2) * hd ** -0.5, dim=-1) @ values[:, index]
        torch.testing.assert_close(out[r], want.reshape(heads, hd), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_torch_layers_c_store_and_gather_are_the_torch_functions(dtype):
    """kv_store of strided (N, KV, hd) rows (a view into a wider projection, as the layers hand it) writes
    quantize_rows' bytes at each row's index; kv_gather of scattered blocks gives dequantize_rows' values in
    float32 and bfloat16, block after block in the order asked."""
    kvh, hd, n = 3, 64, 70
    ops = FusedOps()
    wide = randn(n, 5 * kvh * hd, seed=1, scale=3.0).to(dtype)
    x = wide[:, kvh * hd:2 * kvh * hd].view(n, kvh, hd)  # row stride 5 kvh hd
    pool = torch.zeros(kvh, 6, BLOCK_SIZE, hd + 4, dtype=torch.int8)
    index = torch.randperm(6 * BLOCK_SIZE, generator=torch.Generator().manual_seed(2))[:n].contiguous()
    ops.kv_store(x, index, pool)
    assert torch.equal(pool.view(kvh, -1, hd + 4)[:, index], kv_int8.quantize_rows(x).transpose(0, 1))
    blocks = torch.tensor([4, 0, 2, 5])
    want = kv_int8.dequantize_rows(pool.index_select(1, blocks).reshape(kvh, -1, hd + 4), dtype)
    assert torch.equal(ops.kv_gather(pool, blocks, dtype), want)
    with pytest.raises(TypeError, match="contiguous heads"):
        ops.kv_store(x.transpose(1, 2), index, pool)


def test_a_pool_in_8_bits_takes_68_of_the_128_bytes_a_bfloat16_row_takes():
    bf16 = KVCache.bytes_per_block(30, 3, 64, torch.bfloat16)
    int8 = KVCache.bytes_per_block(30, 3, 64, torch.int8)
    assert (bf16, int8) == (2 * 30 * 3 * BLOCK_SIZE * 128, 2 * 30 * 3 * BLOCK_SIZE * 68)
    cache = KVCache.pool(2, 5, 3, 64, 256, torch.int8)
    assert cache.quantized and cache.head_dim == 64 and cache.k.shape == (2, 3, 5, BLOCK_SIZE, 68)
    assert not KVCache.pool(2, 5, 3, 64, 256, torch.bfloat16).quantized


class _Tokenizer:
    eos_token_ids = (0,)


class _OwnCache:
    """A network that writes its cache in its own dtype (a test's toy, a custom runtime): no cache_dtype_for."""

    cache_dtype = torch.float32

    def forward(self, plan, cache):
        raise AssertionError("not run")


def _engine(net, **kw) -> Engine:
    return Engine(net, net.cfg, _Tokenizer(), None, EngineConfig(max_len=256, max_batch=4, **kw))


def test_an_engine_quantizes_its_cache_where_the_c_attention_reads_it(random_network):
    """auto: int8 for a bfloat16 CPU network with the C decode attention, the network's own dtype for a
    float32 (torch) one; "none" keeps the network's; "int8" is honoured on the torch path too; a network
    that cannot read 8-bit rows refuses it."""
    native = random_network(TINY).to(torch.bfloat16)
    assert use_native_attention(native)
    plain = random_network(TINY)
    assert _engine(native, dtype="bfloat16").cache_dtype is torch.int8
    assert _engine(native, dtype="bfloat16", kv_quantization="none").cache_dtype is torch.bfloat16
    assert _engine(plain).cache_dtype is torch.float32
    engine = _engine(plain, kv_quantization="int8")
    assert engine.cache_dtype is torch.int8 and engine.runner.cache.quantized
    with pytest.raises(EngineConfigError, match="cannot read an 8-bit KV cache"):
        Engine(_OwnCache(), TINY, _Tokenizer(), None, EngineConfig(max_len=256, kv_quantization="int8"))
    with pytest.raises(EngineConfigError, match="kv_quantization"):
        EngineConfig(kv_quantization="fp8")


def _teacher_forced(net, cache_dtype: torch.dtype, plans, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """Logits of a prompt's last token, then of each of `tokens` fed one decode step at a time."""
    cache = KVCache.allocate(net.cfg.num_layers, 2, net.cfg.num_kv_heads, 512, net.cfg.head_dim, cache_dtype)
    steps = [net(plans.prefill(prompt, 1), cache)]
    for i, t in enumerate(tokens):
        steps.append(net(plans.decode([t], [len(prompt) + i], [1]), cache))
    return torch.cat(steps)


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean KL(p || q) of rows of logits."""
    lp, lq = torch.log_softmax(p.float(), -1), torch.log_softmax(q.float(), -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


@pytest.mark.slow
@pytest.mark.parametrize("dtype", HEAVY_DTYPES[1:])
def test_the_8_bit_cache_moves_the_default_model_less_than_twice_what_bfloat16_does(smollm, plans, dtype):
    """The default model in bfloat16 with the C decode attention, fed the same tokens (random prompts of 40 to
    300 tokens, then 60 decode steps) with either cache, against the float32 model: with the 8-bit cache its
    next-token distributions stay within twice the KL divergence the bfloat16 cache already has (measured:
    1.4x), and its argmax agrees with float32's about as often (within 3 points; measured: 94% both)."""
    net = copy.deepcopy(smollm).to(torch.bfloat16)
    assert use_native_attention(net)
    gen = torch.Generator().manual_seed(3)
    runs: dict[str, list[torch.Tensor]] = {"float32": [], "bfloat16": [], "int8": []}
    for n in (40, 150, 300):
        prompt = torch.randint(100, 40000, (n,), generator=gen).tolist()
        tokens = torch.randint(100, 40000, (60,), generator=gen).tolist()
        runs["float32"].append(_teacher_forced(smollm, torch.float32, plans, prompt, tokens))
        runs["bfloat16"].append(_teacher_forced(net, torch.bfloat16, plans, prompt, tokens))
        runs["int8"].append(_teacher_forced(net, torch.int8, plans, prompt, tokens))
    ref, bf16, int8 = (torch.cat(runs[k]) for k in ("float32", "bfloat16", "int8"))
    assert _kl(ref, int8) <= 2 * _kl(ref, bf16)
    agreement = {name: float((t.argmax(-1) == ref.argmax(-1)).float().mean()) for name, t in
                 (("bfloat16", bf16), ("int8", int8))}
    assert agreement["int8"] >= agreement["bfloat16"] - 0.03, agreement
