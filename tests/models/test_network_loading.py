"""Loading: GGUF and Hugging Face sources give the same network; unsupported models and broken
files are refused with a message that names the problem; generation defaults are read."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import ModelConfig, UnsupportedModel
from models.weights import WeightsError, load_network, read_generation_defaults

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

TINY = dict(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, eos_token_id=None, bos_token_id=None, pad_token_id=0)


def tiny_hf(tmp_path: Path, cls: str = "LlamaConfig", **overrides) -> tuple[Path, torch.nn.Module]:
    config = getattr(transformers, cls)(**{**TINY, **overrides})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.3 * torch.randn_like(p))
    directory = tmp_path / "hf"
    model.save_pretrained(directory)
    return directory, model


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's permutation of q/k rows (llama architecture)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, arch: str, model: torch.nn.Module, drop: tuple[str, ...] = ()) -> Path:
    """The model as llama.cpp's converter would write it (float32 tensors)."""
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    names = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        stem, kind = name.removeprefix("model.").rsplit(".", 1)
        parts = stem.split(".", 2)
        gname = f"blk.{parts[1]}.{names[parts[2]]}.{kind}" if parts[0] == "layers" else f"{names[stem]}.{kind}"
        array = tensor.numpy().astype(np.float32)
        if arch == "llama" and stem.endswith(("q_proj", "k_proj")):
            heads = c.num_attention_heads if stem.endswith("q_proj") else c.num_key_value_heads
            array = llama_cpp_permute(array, heads)
        if gname not in drop:
            w.add_tensor(gname, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("arch, cls, overrides", [
    ("llama", "LlamaConfig", {}),
    ("qwen2", "Qwen2Config", {"tie_word_embeddings": False}),
], ids=["llama_gqa_permuted_qk", "qwen2_biases"])
def test_gguf_and_hugging_face_sources_give_the_same_logits(tmp_path, arch, cls, overrides):
    directory, model = tiny_hf(tmp_path, cls, **overrides)
    _, from_hf = load_network(directory)
    _, from_gguf = load_network(write_gguf(tmp_path / "tiny.gguf", arch, model))
    ids = torch.arange(1, 20)
    torch.testing.assert_close(from_gguf.forward_full(ids), from_hf.forward_full(ids), atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        expected = model(ids[None]).logits[0]
    torch.testing.assert_close(from_gguf.forward_full(ids), expected, atol=1e-4, rtol=1e-4)


def test_gguf_without_an_output_tensor_ties_the_head_to_the_embedding(tmp_path):
    _, model = tiny_hf(tmp_path, tie_word_embeddings=True)
    cfg, net = load_network(write_gguf(tmp_path / "tied.gguf", "llama", model))
    assert cfg.tie_word_embeddings and net.lm_head is None


def test_gguf_missing_a_tensor_is_refused_naming_it(tmp_path):
    _, model = tiny_hf(tmp_path)
    path = write_gguf(tmp_path / "broken.gguf", "llama", model, drop=("blk.1.ffn_up.weight",))
    with pytest.raises(WeightsError, match=r"layers\.1\.mlp\.up_proj\.weight"):
        load_network(path)


def test_gguf_of_an_unsupported_architecture_is_refused(tmp_path):
    _, model = tiny_hf(tmp_path)
    with pytest.raises(UnsupportedModel, match="gpt2"):
        load_network(write_gguf(tmp_path / "other.gguf", "gpt2", model))


def test_hugging_face_directory_without_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], **TINY}))
    with pytest.raises(WeightsError, match="safetensors"):
        load_network(tmp_path)


HF_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
             "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "vocab_size": 64, "hidden_act": "silu"}


@pytest.mark.parametrize("change, message", [
    ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, "GPT2LMHeadModel"),
    ({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}, "Qwen3ForCausalLM"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
    ({"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4}}, "longrope"),
    ({"hidden_act": "gelu"}, "gelu"),
    ({"num_key_value_heads": 3}, "multiple of num_kv_heads"),
    ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "use_sliding_window": True}, "sliding"),
], ids=["gpt2", "qwen3", "yarn", "longrope", "gelu", "uneven_gqa", "qwen2_sliding"])
def test_unsupported_models_are_refused_with_the_reason(change, message):
    with pytest.raises(UnsupportedModel, match=message):
        ModelConfig.from_hf_config({**HF_CONFIG, **change})


def test_both_rope_layouts_of_config_json_are_read():
    old = ModelConfig.from_hf_config({**HF_CONFIG, "rope_theta": 5e5, "rope_scaling": {
        "type": "linear", "factor": 2.0}})
    new = ModelConfig.from_hf_config({**HF_CONFIG, "rope_parameters": {
        "rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}})
    assert old == new
    assert (new.rope_theta, new.rope_scaling) == (5e5, {"rope_type": "linear", "factor": 2.0})


def test_generation_defaults_come_from_generation_config_json(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({
        "do_sample": True, "temperature": 0.6, "top_p": 0.9, "eos_token_id": [2, 7], "max_length": 20}))
    assert read_generation_defaults(tmp_path) == {
        "do_sample": True, "temperature": 0.6, "top_p": 0.9, "eos_token_ids": [2, 7]}


def test_generation_defaults_of_a_gguf_file_are_empty(gguf_path):
    assert read_generation_defaults(gguf_path) == {}
