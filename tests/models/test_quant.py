"""bitsandbytes quantization at load time (models/quant/bnb.py, through models/quant): modes are checked
before any weight is read and refused with a message that names the problem; every eligible Linear is
swapped for its bitsandbytes layer and the rest is kept; the weights take the memory the mode promises; a
tiny Llama still decodes close to float32."""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from models.quant import (
    QuantizationError,
    check_quantization,
    load_quantized_network,
    quantize_network,
    weight_bytes,
)
from models.quant.bnb import BNB_MODES

HAVE_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAVE_BNB, reason="bitsandbytes is not installed (pip install bitsandbytes)")
QUANTIZED = list(BNB_MODES)
# swapped-layer memory over float32: bnb_int8 is 1 byte a weight plus a float32 scale a row (0.25 + 1 / in_features,
# in_features 128 or 256 here); 4-bit is half a byte a weight plus one absmax per 64 weights (float32: 0.1406,
# or bfloat16 once repacked for the AVX512-BF16 CPU kernel: 0.1328; plus the 16-entry code table, 0.1411 on an
# AVX2-only CPU). The lower bounds fail if the scales are
# left uncounted.
MEMORY_RATIO = {"bnb_int8": (0.2535, 0.26), "nf4": (0.13, 0.1412), "fp4": (0.13, 0.1412)}
# greedy agreement lower bounds on the tiny random Llama (measured: bnb_int8 0.98, nf4 0.72, fp4 0.66); a wrong
# swap (transposed or mixed-up weights, a lost bias) agrees on about 1 position in VOCAB
MIN_AGREEMENT = {"bnb_int8": 0.8, "nf4": 0.5, "fp4": 0.5}
VOCAB = 256


def runnable(mode: str, device: str = "cpu") -> None:
    """Skip, with bitsandbytes' own reason, when `mode` cannot run here."""
    if not HAVE_BNB:
        pytest.skip("bitsandbytes is not installed (pip install bitsandbytes)")
    try:
        check_quantization(mode, device)
    except QuantizationError as e:
        pytest.skip(f"{mode} on {device} is unavailable: {e}")


def stack(seed: int = 0) -> nn.Sequential:
    """Three Linears (biased, unbiased, biased) around a ReLU, shaped for every kernel, in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64, bias=False), nn.Linear(64, 96)).eval()


def test_unknown_mode_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown quantization 'int3'.*none, int8, int4, q8, q4, bnb_int8, nf4, fp4"):
        check_quantization("int3", "cpu")


@pytest.mark.parametrize("device", ["meta", "mps"])
def test_device_other_than_cpu_and_cuda_is_refused(device: str) -> None:
    with pytest.raises(QuantizationError, match=f"runs on cpu or cuda, not {device}"):
        check_quantization("nf4", device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_is_refused_where_torch_has_no_cuda() -> None:
    with pytest.raises(QuantizationError, match="needs CUDA"):
        check_quantization("bnb_int8", "cuda")


def test_mode_none_only_moves_the_module() -> None:
    module = stack()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert quantize_network(module, "none", "cpu") is module
    assert [type(m) for m in module] == [nn.Linear, nn.ReLU, nn.Linear, nn.Linear]
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_missing_bitsandbytes_is_refused_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` raise ImportError
    with pytest.raises(QuantizationError, match=r"'nf4' needs bitsandbytes >= 0\.46\.0: pip install"):
        check_quantization("nf4", "cpu")


@needs_bnb
def test_bitsandbytes_older_than_the_minimum_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import bitsandbytes

    monkeypatch.setattr(bitsandbytes, "__version__", "0.45.5")
    with pytest.raises(QuantizationError,
                       match=r"bnb_int8 on cpu needs bitsandbytes >= 0\.46\.0 \(installed: 0\.45\.5"):
        check_quantization("bnb_int8", "cpu")


@pytest.mark.parametrize("mode", QUANTIZED)
def test_every_linear_is_swapped_except_skipped_ones_and_biases_are_kept(mode: str) -> None:
    runnable(mode)
    import bitsandbytes as bnb

    module = stack()
    bias0 = module[0].bias.detach().clone()
    quantize_network(module, mode, "cpu", skip={"3"})
    layer = bnb.nn.Linear8bitLt if mode == "bnb_int8" else bnb.nn.Linear4bit
    assert [type(m) for m in module] == [layer, nn.ReLU, layer, nn.Linear]
    assert torch.equal(module[0].bias, bias0) and module[2].bias is None
    assert all(not m.training for m in module)


def test_int8_outlier_threshold_is_off_on_cpu_by_default_and_can_be_set() -> None:
    runnable("bnb_int8")
    default, chosen = stack(), stack()
    quantize_network(default, "bnb_int8", "cpu")
    quantize_network(chosen, "bnb_int8", "cpu", int8_threshold=6.0)
    assert (default[0].state.threshold, chosen[0].state.threshold) == (0.0, 6.0)


@pytest.mark.parametrize("mode", QUANTIZED)
def test_quantized_layers_compute_close_to_float(mode: str) -> None:
    runnable(mode)
    reference, module = stack(), stack()
    quantize_network(module, mode, "cpu")
    x = torch.randn(5, 64)
    with torch.no_grad():
        got, want = module(x), reference(x)
    error = float((got - want).norm() / want.norm())
    assert got.dtype == torch.float32 and error < (0.03 if mode == "bnb_int8" else 0.25)


@pytest.mark.parametrize("mode", QUANTIZED)
def test_weight_bytes_count_packed_weights_and_quant_state(mode: str) -> None:
    runnable(mode)
    linear = nn.Linear(256, 128, bias=False).eval()
    module = nn.Sequential(linear)
    assert weight_bytes(module) == 256 * 128 * 4
    quantize_network(module, mode, "cpu")
    low, high = MEMORY_RATIO[mode]
    assert low * 256 * 128 * 4 <= weight_bytes(module) <= high * 256 * 128 * 4


def test_weight_bytes_count_a_tied_weight_once() -> None:
    embed, head = nn.Embedding(10, 8), nn.Linear(8, 10, bias=False)
    head.weight = embed.weight
    assert weight_bytes(nn.ModuleList([embed, head])) == 10 * 8 * 4


@pytest.mark.parametrize("mode", ["nf4", "fp4"])
def test_layer_shape_the_cpu_kernel_cannot_run_is_refused_at_load_naming_the_layer(mode: str) -> None:
    runnable(mode)
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("the shape limit is that of the AVX512-BF16 CPU kernel, which this CPU does not use")
    module = nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 48)).eval()  # 48 outputs: not a multiple of 32
    with pytest.raises(QuantizationError, match=r"cannot run .* for 1 \(in 128, out 48\).*out_features by 32"):
        quantize_network(module, mode, "cpu")


# --- a tiny Llama made with transformers, loaded through the project's loader ---


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random untied Llama saved as safetensors, its sizes multiples of what every kernel needs. Weights are
    scaled so activations keep their size through the layers and logits are spread, as in a trained model."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=256,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      tie_word_embeddings=False, eos_token_id=None, bos_token_id=None,
                                      pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1.0 if "embed" in name or "lm_head" in name else 0.09
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else scale * torch.randn_like(p))
    directory = tmp_path_factory.mktemp("tiny") / "hf"
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def float_logits(tiny_llama: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random token sequence (64,) and float32's logits (64, VOCAB) for it."""
    _, net = load_quantized_network(tiny_llama, "none")
    ids = torch.randint(0, VOCAB, (64,), generator=torch.Generator().manual_seed(1))
    return ids, net.forward_full(ids)


@pytest.mark.parametrize("mode", QUANTIZED)
def test_tiny_llama_decodes_finite_logits_agreeing_with_float32(mode: str, tiny_llama: Path,
                                                                float_logits: tuple[torch.Tensor, torch.Tensor],
                                                                record_property: Callable[[str, object], None]) -> None:
    runnable(mode)
    ids, want = float_logits
    _, net = load_quantized_network(tiny_llama, mode)
    got = net.forward_full(ids)
    agreement = float((got.argmax(-1) == want.argmax(-1)).float().mean())  # teacher forced, per position
    record_property(f"{mode}_greedy_agreement", agreement)
    print(f"{mode}: greedy agreement with float32 {agreement:.3f}")
    assert got.shape == want.shape and bool(torch.isfinite(got).all())
    assert agreement >= MIN_AGREEMENT[mode]


@pytest.mark.parametrize("mode", QUANTIZED)
def test_tiny_llama_swapped_layers_take_the_memory_the_mode_promises(mode: str, tiny_llama: Path) -> None:
    runnable(mode)
    _, reference = load_quantized_network(tiny_llama, "none")
    _, net = load_quantized_network(tiny_llama, mode)
    names = [n for n, m in reference.named_modules() if type(m) is nn.Linear and n != "lm_head"]
    assert len(names) == 2 * 4  # qkv, o, gate_up, down in each layer
    before = sum(weight_bytes(reference.get_submodule(n)) for n in names)
    after = sum(weight_bytes(net.get_submodule(n)) for n in names)
    low, high = MEMORY_RATIO[mode]
    assert low <= after / before <= high
    # the embedding, norms and LM head are kept as they were
    kept = weight_bytes(reference) - before
    assert weight_bytes(net) - after == kept and type(net.lm_head) is nn.Linear


@pytest.mark.parametrize("mode", QUANTIZED)
def test_tiny_llama_in_bfloat16_keeps_its_dtype_outside_the_swapped_layers(mode: str, tiny_llama: Path) -> None:
    runnable(mode)
    _, net = load_quantized_network(tiny_llama, mode, dtype=torch.bfloat16)
    ids = torch.arange(16)
    logits = net.forward_full(ids)
    assert net.dtype == torch.bfloat16 and net.layers[0].input_layernorm.weight.dtype == torch.bfloat16
    assert logits.dtype == torch.float32 and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("mode", QUANTIZED)
def test_tiny_llama_untied_lm_head_is_quantized_when_not_skipped(
        mode: str, tiny_llama: Path, float_logits: tuple[torch.Tensor, torch.Tensor]) -> None:
    runnable(mode)
    ids, want = float_logits
    _, net = load_quantized_network(tiny_llama, mode, skip={"embed_tokens"})
    got = net.forward_full(ids)
    assert type(net.lm_head).__module__.startswith("bitsandbytes") and type(net.embed_tokens) is nn.Embedding
    assert bool(torch.isfinite(got).all())
    assert float((got.argmax(-1) == want.argmax(-1)).float().mean()) >= MIN_AGREEMENT[mode]


def test_unknown_mode_is_refused_before_the_weights_are_read(tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="unknown quantization"):
        load_quantized_network(tmp_path / "missing", "q4_k")


# --- the default model (slow: one load and quantization per mode) ---


@pytest.mark.slow
@pytest.mark.parametrize("mode", QUANTIZED)
def test_default_model_quantized_still_answers_paris(mode: str, gguf_path: Path, plans) -> None:
    runnable(mode)
    from models.chat_template import ChatTemplate
    from models.gguf import GGUFFile
    from models.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_gguf(GGUFFile(gguf_path))
    template = ChatTemplate(tokenizer.chat_template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
    prompt = tokenizer.encode(template.render([{"role": "user", "content": "What is the capital of France?"}]))
    _, net = load_quantized_network(gguf_path, mode)
    tokens, _ = plans.greedy(net, prompt, 20, stop=tokenizer.eos_token_id)
    assert "Paris" in tokenizer.decode(tokens)
