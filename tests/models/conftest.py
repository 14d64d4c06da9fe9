"""Fixtures for the network tests: the default GGUF, our network loaded from it, transformers' reference
model and tokenizer loaded from the same file (float32), and helpers that drive the network through
BatchPlans the way the engine does."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from models.batch import BatchPlan, KVCache
from models.builtin import smollm2_gguf_path
from models.config import ModelConfig
from models.llama import LlamaNetwork


def prefill_plan(ids: list[int], slot: int, start: int = 0, last_logits: bool = True) -> BatchPlan:
    """A step holding one prefill chunk: `ids` at positions start.. of `slot`."""
    n = len(ids)
    return BatchPlan(
        token_ids=torch.tensor(ids, dtype=torch.long),
        positions=torch.arange(start, start + n),
        slots=torch.full((n,), slot, dtype=torch.long),
        num_decode=0,
        prefills=[(0, slot, start, n)],
        logits_rows=torch.tensor([n - 1] if last_logits else [], dtype=torch.long),
    )


def decode_plan(tokens: list[int], positions: list[int], slots: list[int]) -> BatchPlan:
    """A step of decode tokens only, one per slot."""
    return BatchPlan(
        token_ids=torch.tensor(tokens, dtype=torch.long),
        positions=torch.tensor(positions, dtype=torch.long),
        slots=torch.tensor(slots, dtype=torch.long),
        num_decode=len(tokens),
        prefills=[],
        logits_rows=torch.arange(len(tokens)),
    )


def greedy(net: LlamaNetwork, prompt: list[int], steps: int, slot: int = 0, cache: KVCache | None = None,
           stop: int | None = None) -> tuple[list[int], list[torch.Tensor]]:
    """Prefill `prompt` in one chunk, then decode token by token, always taking the argmax.
    Returns the new tokens and the logits (vocab,) each was chosen from."""
    cache = cache if cache is not None else net.new_cache(slot + 1, len(prompt) + steps)
    logits = net(prefill_plan(prompt, slot), cache)[0]
    tokens, seen = [], []
    for i in range(steps):
        seen.append(logits)
        tokens.append(int(logits.argmax()))
        if tokens[-1] == stop or i == steps - 1:
            break
        logits = net(decode_plan([tokens[-1]], [len(prompt) + i], [slot]), cache)[0]
    return tokens, seen


def tiny_network(cfg: ModelConfig) -> LlamaNetwork:
    """A network of `cfg` with seeded random weights large enough that every layer matters (norms near 1)."""
    torch.manual_seed(0)
    net = LlamaNetwork(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.3 * torch.randn_like(p))
    return net.eval()


@pytest.fixture(scope="session")
def random_network():
    """tiny_network, for tests (conftest modules are not imported by tests)."""
    return tiny_network


@pytest.fixture(scope="session")
def plans() -> SimpleNamespace:
    """prefill_plan, decode_plan and greedy, for tests (conftest modules are not imported by tests)."""
    return SimpleNamespace(prefill=prefill_plan, decode=decode_plan, greedy=greedy)


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    return smollm2_gguf_path()


@pytest.fixture(scope="session")
def smollm(gguf_path: Path) -> LlamaNetwork:
    """Our network, loaded from the default GGUF in float32."""
    from models.weights import load_network

    return load_network(gguf_path)[1]


@pytest.fixture(scope="session")
def reference(gguf_path: Path) -> SimpleNamespace:
    """transformers' model and tokenizer from the same GGUF, float32, eval mode."""
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    return SimpleNamespace(model=model, tokenizer=tokenizer)

