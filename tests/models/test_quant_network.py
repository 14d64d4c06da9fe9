"""The default model with weight-only int8, int4, q8 and q4 projections (models/quant/): the network's bitwise batch
invariance cases (tests/models/test_network_bitwise.py, run here on the quantized networks: a prompt in chunks
against whole, a decode row alone against beside others, a step mixing decode and prefill), and it still
answers the question the other modes answer."""
from __future__ import annotations

import copy

import pytest
import torch
from test_network_bitwise import (  # the strongest of its cases, collected here with this module's `net`
    prompts,
    test_a_step_mixing_decode_and_prefill_gives_each_sequence_its_logits_alone,
)

from models.llama import LlamaNetwork
from models.quant import quantize_network
from models.quant.int4 import Int4Linear
from models.quant.int8 import Int8Embedding, Int8Linear
from models.quant.qdot import QdotLinear

pytestmark = pytest.mark.slow

# Only the mixed step (decodes beside a chunked prefill, each against itself alone): it covers what the other
# cases do, and each case runs the whole network twice; the kernels' own row independence is tested at many
# row counts in test_quant_kernels.py.
__all__ = ["prompts", "test_a_step_mixing_decode_and_prefill_gives_each_sequence_its_logits_alone"]


@pytest.fixture(scope="module", params=["int8", "int4", "q8", "q4"])
def net(request, smollm: LlamaNetwork) -> LlamaNetwork:
    return quantize_network(copy.deepcopy(smollm), request.param, compute_dtype=torch.float32)


def test_every_projection_and_the_head_are_swapped(net):
    layers = [layer.mlp.down_proj for layer in net.layers] + [layer.self_attn.qkv_proj for layer in net.layers]
    kinds = {(type(m), getattr(m, "bits", None)) for m in layers}
    assert len(kinds) == 1 and kinds <= {(Int8Linear, None), (Int4Linear, None), (QdotLinear, 8), (QdotLinear, 4)}
    assert type(net.embed_tokens) is Int8Embedding
    if type(net.lm_head) is Int8Linear:
        assert net.embed_tokens.codes is net.lm_head.codes  # the tied table is held once
    else:  # q8 / q4: an 8-bit head in the kernels' layout, and the table's own int8 rows
        assert type(net.lm_head) is QdotLinear and net.lm_head.bits == 8
    assert net.dtype == torch.float32


def test_the_quantized_default_model_answers_paris(net, plans, gguf_path):
    """The answer's opening words are given: the float32 model itself puts its first token's two choices,
    "The" and "L" (L'...), 0.08 nats apart, so which opening a mode takes is a coin toss (q8 takes "L"); what is
    checked is that the quantized model still knows the answer."""
    from models.prompting import load_tokenizer

    tokenizer, template = load_tokenizer(gguf_path)
    chat = template.render([{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True)
    prompt = tokenizer.encode(chat + "The capital of France is")
    tokens, _ = plans.greedy(net, prompt, 8, stop=tokenizer.eos_token_id)
    assert tokenizer.decode(tokens).startswith(" Paris")
