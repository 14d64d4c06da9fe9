"""The weight-only modes quantize each decoder layer as the loader fills it (models.quant.load_quantized_network
with models.weights.load_network's `on_layer`): the network is the one that quantizing the loaded float32
network gives, tensor for tensor, and each layer is handed to the hook before the next layer's tensors are read."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_network_loading import tiny_hf, write_gguf
from torch import nn

from models.quant import load_quantized_network, quantize_network
from models.quant.weight_only import WEIGHT_ONLY_MODES
from models.weights import load_network

SIZES = dict(vocab_size=256, hidden_size=128, intermediate_size=256)  # multiples of every kernel's group


@pytest.fixture(scope="module", params=["hf_untied", "gguf_tied"])
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "hf_untied":
        return tiny_hf(tmp, tie_word_embeddings=False, **SIZES)[0]
    _, model = tiny_hf(tmp, tie_word_embeddings=True, **SIZES)
    return write_gguf(tmp / "tiny.gguf", "llama", model)


@pytest.mark.parametrize("mode", WEIGHT_ONLY_MODES)
def test_a_network_quantized_as_it_loads_is_the_loaded_network_quantized(source: Path, mode: str) -> None:
    _, streamed = load_quantized_network(source, mode, dtype=torch.float32)
    _, whole = load_network(source)
    quantize_network(whole, mode, compute_dtype=torch.float32)
    got, want = streamed.state_dict(), whole.state_dict()
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name
    assert [type(m) for m in streamed.modules()] == [type(m) for m in whole.modules()]
    ids = torch.arange(24) % 256
    assert torch.equal(streamed.forward_full(ids), whole.forward_full(ids))


def _read_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: bool) -> tuple[int, list[str]]:
    """Which tensors a load reads, in order (a layer's number, or "top"), with the hook's calls among them."""
    import models.weights as weights

    _, model = tiny_hf(tmp_path, tie_word_embeddings=True, **SIZES)
    path = write_gguf(tmp_path / "tiny.gguf", "llama", model)
    log: list[str] = []
    read = weights._gguf_tensor

    def logged(gguf, name, heads):  # type: ignore[no-untyped-def]
        log.append(name.split(".")[1] if name.startswith("blk.") else "top")
        return read(gguf, name, heads)

    def on_layer(prefix: str, layer: nn.Module) -> None:
        assert not any(p.is_meta for p in layer.parameters())
        log.append(f"hook {prefix.split('.')[1]}")

    monkeypatch.setattr(weights, "_gguf_tensor", logged)
    cfg, net = load_network(path, on_layer=on_layer if hook else None)
    assert not any(p.is_meta for p in net.parameters())
    return cfg.num_layers, log


PER_LAYER = 9  # q, k, v, o, gate, up, down and the two norms


def test_each_layer_is_handed_over_before_the_next_one_is_read(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    layers, log = _read_order(tmp_path, monkeypatch, hook=True)
    # the embedding and the final norm last (tied: no head tensor), once the layers hold their codes
    assert log == [x for i in range(layers) for x in [str(i)] * PER_LAYER + [f"hook {i}"]] + ["top"] * 2


def test_without_a_hook_the_embedding_is_read_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layers, log = _read_order(tmp_path, monkeypatch, hook=False)
    # its float32 dequantization, the load's largest temporary, beside nothing else
    assert log == ["top"] * 2 + [str(i) for i in range(layers) for _ in range(PER_LAYER)]
