"""The fused layer operators of the q4 / q8 modes (models/fused_layers.py, models/quant/native/layer_ops.c): each
gives the portable scalar build's bits on every instruction set, a row's result ignores the other rows, they
compute what the torch layers compute, and the default model on them is the torch path's model."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from models import kv_int8
from models.batch import BLOCK_SIZE
from models.fused_layers import FusedOps
from models.llama import RMSNorm
from models.rope import RotaryEmbedding

ISAS = ["avx2", "avx-vnni", "auto"]  # each no more than this CPU has


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


class Step:
    """What the fused operators read of a prepared step (models/llama.py, _Step)."""

    def __init__(self, positions: list[int], tables: torch.Tensor, head_dim: int):
        pos = torch.tensor(positions, dtype=torch.int64)
        self.decode_positions = pos
        self.decode_tables = tables
        self.write_index = (tables[torch.arange(len(positions)), pos // BLOCK_SIZE] * BLOCK_SIZE
                            + pos % BLOCK_SIZE).contiguous()
        angles = pos[:, None].float() * (1.0 / 10000 ** (torch.arange(0, head_dim, 2) / head_dim))[None]
        emb = torch.cat((angles, angles), dim=-1)
        self.cos, self.sin = emb.cos().contiguous(), emb.sin().contiguous()


def pool(kv_heads: int, blocks: int, head_dim: int, seed: int, int8: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's k and v (kv_heads, blocks, BLOCK_SIZE, head_dim) in bfloat16 (the fused layers' cache), or in
    the 8-bit cache's rows (models/kv_int8.py), full of large values."""
    k = randn(kv_heads, blocks, BLOCK_SIZE, head_dim, seed=seed, scale=3.0)
    v = randn(kv_heads, blocks, BLOCK_SIZE, head_dim, seed=seed + 1, scale=3.0)
    if int8:
        return kv_int8.quantize_rows(k), kv_int8.quantize_rows(v)
    return k.to(torch.bfloat16), v.to(torch.bfloat16)


def run_all(ops: FusedOps, seed: int = 0, int8: bool = False) -> list[torch.Tensor]:
    """Every operator once on the same inputs: 5 rows at scattered positions and blocks, 9 heads over 3."""
    heads, kvh, hd, inter = 9, 3, 64, 80
    x, h = randn(5, 96, seed=seed), randn(5, 96, seed=seed + 1)
    norm = RMSNorm(96, 1e-5)
    norm.weight.data = randn(96, seed=seed + 2) * 0.1 + 1
    y = ops.add_rms_norm(x, h, norm)
    gated = ops.silu_mul(randn(5, 2 * inter, seed=seed + 3, scale=4.0))
    tables = torch.tensor([[3, 7, 1], [2, 9, 4], [5, 0, 0], [8, 6, 10], [11, 0, 0]], dtype=torch.int64)
    step = Step([130, 70, 5, 191, 0], tables, hd)
    k, v = pool(kvh, 12, hd, seed + 4, int8)
    q = ops.rope_write(randn(5, (heads + 2 * kvh) * hd, seed=seed + 6), step, k, v, heads, kvh, hd)
    full = ops.decode_attention(q, k, v, step, None)
    windowed = ops.decode_attention(q, k, v, step, 40)
    return [x, y, gated, q, k, v, full, windowed]


@pytest.mark.parametrize("int8", [False, True], ids=["bf16-cache", "int8-cache"])
@pytest.mark.parametrize("isa", ISAS)
def test_every_instruction_set_gives_the_portable_paths_bits(isa, int8):
    for got, want in zip(run_all(FusedOps(isa), int8=int8), run_all(FusedOps("scalar"), int8=int8), strict=True):
        assert torch.equal(got, want)


def test_they_compute_what_the_torch_layers_compute():
    heads, kvh, hd = 9, 3, 64
    x, h = randn(4, 96), randn(4, 96, seed=1)
    norm = RMSNorm(96, 1e-5)
    norm.weight.data = randn(96, seed=2) * 0.1 + 1
    ops = FusedOps()
    y = ops.add_rms_norm(x, h, norm)
    torch.testing.assert_close(x, randn(4, 96) + randn(4, 96, seed=1), rtol=0, atol=0)  # the residual, in place
    torch.testing.assert_close(y, norm(x), rtol=2e-6, atol=1e-6)

    g = torch.cat([torch.linspace(-100, 100, 201), randn(199, seed=3, scale=5.0)])[None].repeat(2, 1)
    gate_up = torch.cat([g, randn(2, 400, seed=4)], dim=1)
    torch.testing.assert_close(ops.silu_mul(gate_up), F.silu(gate_up[:, :400]) * gate_up[:, 400:], rtol=3e-6,
                               atol=1e-7)

    tables = torch.tensor([[3, 1], [2, 4]], dtype=torch.int64)
    step = Step([100, 9], tables, hd)
    k, v = pool(kvh, 5, hd, 5)
    qkv = randn(2, (heads + 2 * kvh) * hd, seed=7)
    q = ops.rope_write(qkv, step, k, v, heads, kvh, hd)
    parts = qkv.view(2, heads + 2 * kvh, hd)
    rotated = RotaryEmbedding.apply(parts[:, :heads + kvh], step.cos[:, None], step.sin[:, None])
    torch.testing.assert_close(q, rotated[:, :heads], rtol=0, atol=1e-6)
    flat_k, flat_v = k.view(kvh, -1, hd), v.view(kvh, -1, hd)
    # k and v rounded to bfloat16 as they are written (k from the same rotation, to one bfloat16 step)
    torch.testing.assert_close(flat_k[:, step.write_index].transpose(0, 1), rotated[:, heads:].to(torch.bfloat16))
    assert torch.equal(flat_v[:, step.write_index].transpose(0, 1), parts[:, heads + kvh:].to(torch.bfloat16))

    for window in (None, 7):
        out = ops.decode_attention(q, k, v, step, window)
        for r, p in enumerate(step.decode_positions.tolist()):
            lo = 0 if window is None else max(0, p - window + 1)
            index = tables[r, torch.arange(lo, p + 1) // BLOCK_SIZE] * BLOCK_SIZE + torch.arange(lo, p + 1) % BLOCK_SIZE
            keys, values = flat_k[:, index].float(), flat_v[:, index].float()  # (kvh, n, hd)
            rows = q[r].view(kvh, heads // kvh, hd)
            want = torch.softmax(rows @ keys.transpose(1, 2) * hd ** -0.5, dim=-1) @ values
            torch.testing.assert_close(out[r], want.reshape(heads, hd), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("int8", [False, True], ids=["bf16-cache", "int8-cache"])
def test_a_row_gets_the_same_bits_alone_and_among_any_others(int8):
    heads, kvh, hd = 9, 3, 64
    ops = FusedOps()
    tables = torch.arange(1, 41, dtype=torch.int64).view(8, 5)
    positions = [300, 2, 64, 63, 250, 17, 129, 1]
    step = Step(positions, tables, hd)
    k, v = pool(kvh, 41, hd, 9, int8)
    q = randn(8, heads, hd, seed=10)
    together = ops.decode_attention(q, k, v, step, None)
    x = randn(8, 576, seed=11)
    norm = RMSNorm(576, 1e-5)
    normed = ops.add_rms_norm(x.clone(), None, norm)
    gate_up = randn(8, 3072, seed=12)
    gated = ops.silu_mul(gate_up)
    for r in range(8):
        alone = Step([positions[r]], tables[r:r + 1].contiguous(), hd)
        assert torch.equal(ops.decode_attention(q[r:r + 1].contiguous(), k, v, alone, None)[0], together[r])
        assert torch.equal(ops.add_rms_norm(x[r:r + 1].clone(), None, norm)[0], normed[r])
        assert torch.equal(ops.silu_mul(gate_up[r:r + 1].contiguous())[0], gated[r])


def test_strided_or_other_dtypes_are_refused():
    with pytest.raises(TypeError, match="contiguous float32"):
        FusedOps().silu_mul(randn(4, 8).to(torch.bfloat16))
    with pytest.raises(TypeError, match="contiguous float32"):
        FusedOps().silu_mul(randn(8, 4).t())


@pytest.mark.slow
def test_the_default_model_on_them_is_the_torch_layers_model(smollm, plans):
    """A step mixing two decode rows and a prefill chunk, on the float32 default model: the fused layers' logits
    are the torch layers', up to the rounding of their bfloat16 cache."""
    fused = copy.deepcopy(smollm)
    fused.fused_ops = FusedOps()
    prompts = [torch.randint(100, 40000, (n,), generator=torch.Generator().manual_seed(n)).tolist()
               for n in (70, 9, 33)]
    results = []
    for net in (smollm, fused):
        cache = net.new_cache(3, 256)
        first = [net(plans.prefill(p, slot), cache)[0] for slot, p in enumerate(prompts[:2])]
        ids = prompts[2]
        step = plans.decode([int(first[0].argmax()), int(first[1].argmax())], [70, 9], [0, 1])
        mixed = type(step)(token_ids=torch.cat([step.token_ids, torch.tensor(ids)]),
                           positions=torch.cat([step.positions, torch.arange(len(ids))]),
                           slots=torch.cat([step.slots, torch.full((len(ids),), 2)]), num_decode=2,
                           prefills=[(2, 2, 0, len(ids))], logits_rows=torch.tensor([0, 1, 2 + len(ids) - 1]))
        results.append(torch.cat([torch.stack(first), net(mixed, cache)]))
    # bfloat16 keys and values move logits (of magnitude ~20) by about 0.1; a wrong key, position or rotation by
    # whole units (measured: a float32 cache gave 3e-5 here)
    torch.testing.assert_close(results[1], results[0], rtol=0.02, atol=0.25)
    assert torch.equal(results[1].argmax(-1), results[0].argmax(-1))


def test_a_decode_step_in_one_call_gives_the_operator_paths_bits(random_network, plans):
    """genq_decode_layers (every layer of a decode-only step in one call) against the same step operator by
    operator, on a small q4 network: equal logits and equal caches, over several steps; a deep copy too."""
    from models.config import ModelConfig
    from models.quant import quantize_network

    cfg = ModelConfig(architecture="llama", vocab_size=96, hidden_size=64, intermediate_size=96, num_layers=3,
                      num_heads=4, num_kv_heads=2, head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0,
                      max_position_embeddings=256)
    whole = quantize_network(random_network(cfg), "q4", compute_dtype=torch.float32)
    assert isinstance(whole.fused_ops, FusedOps) and whole.fused_ops.layer_table(whole) is not None
    by_operator = copy.deepcopy(whole)
    by_operator.fused_ops = FusedOps(whole_steps=False)
    prompts = [[5, 9, 3, 70, 2], [11] * 40, [1, 2]]
    caches, tokens = [], []
    for net in (whole, by_operator):
        cache = net.new_cache(3, 128)
        first = [net(plans.prefill(p, slot), cache)[0] for slot, p in enumerate(prompts)]
        steps = [torch.stack(first)]
        for i in range(4):
            step = plans.decode([int(t) for t in steps[-1].argmax(-1)], [len(p) + i for p in prompts], [0, 1, 2])
            steps.append(net(step, cache))
        caches.append(cache)
        tokens.append(torch.cat(steps))
    assert torch.equal(tokens[0], tokens[1])
    assert torch.equal(caches[0].k, caches[1].k) and torch.equal(caches[0].v, caches[1].v)


@pytest.mark.slow
def test_a_bfloat16_network_with_the_c_decode_attention_gives_its_torch_attentions_answers(smollm, plans):
    """use_native_attention on the bfloat16 default model: decode steps (rows of several lengths, in odd slots)
    give the torch attention's logits up to bfloat16 rounding, and the same greedy tokens; float32 networks and
    the q modes' are left as they are."""
    from models.fused_layers import use_native_attention

    assert not use_native_attention(smollm)  # float32
    torch_attention = copy.deepcopy(smollm).to(torch.bfloat16)
    native = copy.deepcopy(torch_attention)
    assert use_native_attention(native) and not use_native_attention(native)
    assert native.fused_ops is not None and not native.fused_ops.layers and native.cache_dtype == torch.bfloat16
    prompts = [torch.randint(100, 40000, (n,), generator=torch.Generator().manual_seed(n)).tolist()
               for n in (70, 9, 140)]
    results = []
    for net in (torch_attention, native):
        cache = net.new_cache(6, 256)
        logits = torch.stack([net(plans.prefill(p, 2 * slot + 1), cache)[0] for slot, p in enumerate(prompts)])
        steps = [logits]
        for i in range(3):
            step = plans.decode([int(t) for t in steps[-1].argmax(-1)], [len(p) + i for p in prompts], [1, 3, 5])
            steps.append(net(step, cache))
        results.append(torch.cat(steps))
    assert torch.equal(results[0].argmax(-1), results[1].argmax(-1))
    torch.testing.assert_close(results[1], results[0], rtol=0.02, atol=0.5)


def test_without_the_c_library_a_bfloat16_network_keeps_its_torch_attention(random_network, monkeypatch, caplog):
    import models.fused_layers as fused_layers
    from models.config import ModelConfig
    from models.quant.native import NativeUnavailable

    def unavailable(isa: str = "auto"):
        raise NativeUnavailable("the q4 / q8 modes compile their kernels on first use and need a C compiler")

    monkeypatch.setattr(fused_layers, "library", unavailable)
    cfg = ModelConfig(architecture="llama", vocab_size=96, hidden_size=48, intermediate_size=80, num_layers=1,
                      num_heads=6, num_kv_heads=2, head_dim=8, rms_norm_eps=1e-5, rope_theta=10000.0,
                      max_position_embeddings=64)
    net = random_network(cfg).to(torch.bfloat16)
    with caplog.at_level("WARNING", logger="models.fused_layers"):
        assert not fused_layers.use_native_attention(net)
    assert net.fused_ops is None and "need a C compiler" in caplog.text
