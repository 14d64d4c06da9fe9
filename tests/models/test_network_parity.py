"""Our network agrees with transformers on tiny random models of every supported architecture:
same logits (float32 tolerance) and the same greedy tokens, decoded token by token through the KV cache."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from models.weights import load_network  # noqa: E402

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, eos_token_id=None, bos_token_id=None,
              pad_token_id=0)

# name -> (config class, config overrides, max_shard_size or None)
ARCHITECTURES = {
    "llama3_rope_scaling_tied": ("LlamaConfig", dict(
        tie_word_embeddings=True, max_position_embeddings=64,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=32)), None),
    "llama2_mha_two_shards": ("LlamaConfig", dict(num_key_value_heads=4, rms_norm_eps=1e-5), "150KB"),
    "llama_linear_rope_attention_bias": ("LlamaConfig", dict(
        attention_bias=True, rope_scaling=dict(rope_type="linear", factor=2.0)), None),
    "llama_dynamic_rope_past_max_positions": ("LlamaConfig", dict(
        max_position_embeddings=16, rope_scaling=dict(rope_type="dynamic", factor=2.0)), None),
    "mistral_sliding_window": ("MistralConfig", dict(sliding_window=5, head_dim=16), None),
    "qwen2_biases_untied": ("Qwen2Config", dict(tie_word_embeddings=False, rope_theta=1e6), None),
}


def tiny_model(tmp_path: Path, name: str) -> tuple[Path, torch.nn.Module]:
    """A random transformers model saved as safetensors; every weight (norms and biases too) is random,
    so a mix-up of any two tensors shows in the logits."""
    cls_name, overrides, shard = ARCHITECTURES[name]
    config = getattr(transformers, cls_name)(**{**COMMON, **overrides})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.3)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(tmp_path, **kwargs)
    return tmp_path, model


@pytest.fixture(params=list(ARCHITECTURES))
def pair(request, tmp_path):
    directory, reference = tiny_model(tmp_path, request.param)
    _, net = load_network(directory)
    return request.param, reference, net


def prompt(length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (length,), generator=torch.Generator().manual_seed(seed))


def test_logits_match_transformers(pair):
    _, reference, net = pair
    ids = prompt()
    with torch.no_grad():
        expected = reference(ids[None]).logits[0]
    torch.testing.assert_close(net.forward_full(ids), expected, atol=1e-4, rtol=1e-4)


def test_greedy_tokens_through_the_cache_match_transformers_generate(pair, plans):
    _, reference, net = pair
    ids = prompt()
    with torch.no_grad():
        expected = reference.generate(ids[None], max_new_tokens=20, do_sample=False)[0, len(ids):].tolist()
    tokens, _ = plans.greedy(net, ids.tolist(), 20)
    assert tokens == expected


def test_sharded_checkpoint_is_read_from_every_shard(tmp_path):
    directory, _ = tiny_model(tmp_path, "llama2_mha_two_shards")
    assert len(list(directory.glob("model-*-of-*.safetensors"))) >= 2
    assert (directory / "model.safetensors.index.json").exists()
    cfg, _ = load_network(directory)
    assert cfg.num_kv_heads == cfg.num_heads == 4
