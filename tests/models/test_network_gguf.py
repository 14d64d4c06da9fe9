"""The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) agrees with transformers' model loaded from the same
file: logits within float32 tolerance and greedy continuations token for token."""
from __future__ import annotations

import pytest
import torch

from models.config import ModelConfig
from models.gguf import GGUFFile

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a land far away,",
    "1, 2, 3, 5, 8, 13,",
]

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Is water wet?"}],
    [{"role": "user", "content": "List three prime numbers."}],
    [{"role": "user", "content": "Translate 'good morning' into German."}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a fun fact about octopuses."}],
]


def test_config_is_read_from_gguf_metadata(gguf_path):
    cfg = ModelConfig.from_gguf(GGUFFile(gguf_path))
    assert (cfg.architecture, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == \
        ("llama", 30, 576, 9, 3)
    assert cfg.tie_word_embeddings and cfg.rope_theta == 100000.0 and cfg.eos_token_ids == (2,)


@pytest.mark.parametrize("text", PROMPTS)
def test_logits_match_transformers(smollm, reference, text):
    ids = reference.tokenizer(text, return_tensors="pt").input_ids[0]
    with torch.no_grad():
        expected = reference.model(ids[None]).logits[0]
    torch.testing.assert_close(smollm.forward_full(ids), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("messages", CHATS, ids=[m[-1]["content"][:20] for m in CHATS])
def test_greedy_chat_continuation_matches_transformers_generate(smollm, reference, plans, messages):
    ids = reference.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True)["input_ids"][0]
    eos = reference.model.generation_config.eos_token_id
    with torch.no_grad():
        out = reference.model.generate(ids[None], attention_mask=torch.ones_like(ids[None]), max_new_tokens=32,
                                       do_sample=False)
    expected = out[0, len(ids):].tolist()
    tokens, _ = plans.greedy(smollm, ids.tolist(), 32, stop=eos)
    assert tokens == expected, (reference.tokenizer.decode(tokens), reference.tokenizer.decode(expected))
