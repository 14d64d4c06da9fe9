"""Optional bitsandbytes quantization: every projection is swapped, and the network still runs close to float32."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.config import ModelConfig
from models.llama import LlamaNetwork
from models.quant import QuantizationError, linear_weight_bytes, quantize

pytest.importorskip("bitsandbytes")


def tiny(seed: int = 0) -> LlamaNetwork:
    cfg = ModelConfig(architecture="qwen2", vocab_size=64, hidden_size=64, intermediate_size=128, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=16, rms_norm_eps=1e-6, rope_theta=1e4,
                      max_position_embeddings=64, attention_bias=True)
    torch.manual_seed(seed)
    return LlamaNetwork(cfg).eval()


@pytest.mark.parametrize("mode, tolerance", [("int8", 0.02), ("nf4", 0.25), ("fp4", 0.3)])
def test_quantized_network_swaps_every_projection_and_stays_close(mode, tolerance):
    ids = torch.arange(1, 30)
    expected = tiny().forward_full(ids)
    net = quantize(tiny(), mode)
    assert not any(type(m) is nn.Linear for m in net.modules())  # untied head included
    logits = net.forward_full(ids)
    assert (logits - expected).norm() / expected.norm() < tolerance


def test_int8_holds_the_projection_weights_in_a_quarter_of_the_bytes():
    before = linear_weight_bytes(tiny())
    assert linear_weight_bytes(quantize(tiny(), "int8")) == before // 4


def test_unknown_quantization_is_refused():
    with pytest.raises(QuantizationError, match="int3"):
        quantize(tiny(), "int3")
