"""The tokenizer agrees with transformers' tokenizer for the same GGUF file or model folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.gguf import GGUFFile
from models.tokenizer import Tokenizer
from tests.models._tok_fixtures import SAMPLES, our_tokenizer, reference_tokenizer, write_gguf_variant

SAMPLE_IDS = sorted(SAMPLES)


@pytest.fixture(scope="module")
def ours() -> Tokenizer:
    return our_tokenizer()


@pytest.fixture(scope="module")
def ref():
    return reference_tokenizer()


# ---- the default model's GGUF -------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_IDS)
def test_gguf_token_ids_equal_transformers(ours, ref, name):
    text = SAMPLES[name]
    assert ours.encode(text) == ref.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("name", SAMPLE_IDS)
def test_gguf_token_ids_with_special_tokens_equal_transformers(ours, ref, name):
    text = SAMPLES[name]
    assert ours.encode(text, add_special_tokens=True) == ref(text)["input_ids"]


@pytest.mark.parametrize("name", SAMPLE_IDS)
def test_decode_equals_transformers(ours, ref, name):
    ids = ours.encode(SAMPLES[name])
    for skip in (True, False):
        assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("name", [n for n in SAMPLE_IDS if n != "special"])
def test_decode_of_encode_round_trips(ours, name):
    text = SAMPLES[name]
    assert ours.decode(ours.encode(text)) == text


def test_special_tokens_written_in_text_are_single_ids(ours):
    ids = ours.encode(SAMPLES["special"])
    assert ids[0] == ours.token_to_id("<|im_start|>") == 1
    assert ours.token_to_id("<|im_end|>") in ids
    assert ours.decode(ids, skip_special_tokens=False) == SAMPLES["special"]
    assert ours.decode(ids) == "user\nHello\nassistant\n"


def test_empty_string_encodes_to_no_ids(ours):
    assert ours.encode("") == []
    assert ours.decode([]) == ""


def test_gguf_special_token_metadata(ours, ref):
    assert (ours.bos_token, ours.eos_token, ours.pad_token, ours.unk_token) == (
        ref.bos_token, ref.eos_token, ref.pad_token, ref.unk_token)
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (1, 2, 2)
    assert ours.add_bos is False
    assert ours.vocab_size == len(ref) == 49152
    assert ours.chat_template == ref.chat_template


def test_eos_token_ids_include_end_of_turn_and_end_of_text(ours):
    assert ours.eos_token_ids == frozenset({ours.token_to_id("<|im_end|>"), ours.token_to_id("<|endoftext|>")})


def test_id_to_token_spells_the_vocabulary_entry(ours, ref):
    ids = ours.encode(" world")
    assert [ours.id_to_token(i) for i in ids] == ref.convert_ids_to_tokens(ids) == ["Ġworld"]
    assert ours.is_special(2) and not ours.is_special(ids[0])


def test_id_outside_vocabulary_is_refused(ours):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.id_to_token(ours.vocab_size + 10)


# ---- other GGUF tokenizer settings --------------------------------------------------------------


@pytest.fixture(scope="module")
def variant_dir(tmp_path_factory) -> Path:
    # llama-3 split regex, BOS wanted, a user-defined token and a control token mislabeled outside the
    # byte alphabet (skipped as special, respelled in the vocabulary)
    d = tmp_path_factory.mktemp("gguf_variant")
    write_gguf_variant(d / "variant.gguf", pre="llama-bpe", add_bos=True,
                       extra_tokens=(("<think>", 4), ("<|日本|>", 3)))
    return d


VARIANT_TEXTS = [SAMPLES[n] for n in ("english", "whitespace", "digits", "code", "japanese")] + [
    "Let me <think>hard</think> about <|日本|> 12345678",
]


def test_gguf_variant_settings_equal_transformers(variant_dir):
    # the class AutoTokenizer resolves to for this file; AutoTokenizer would first parse a model config
    # from the whole file with the gguf package, which takes seconds and changes nothing here
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    ref = TokenizersBackend.from_pretrained(str(variant_dir), gguf_file="variant.gguf")
    ours = Tokenizer.from_gguf(GGUFFile(variant_dir / "variant.gguf"))
    assert ours.add_bos is True
    for text in VARIANT_TEXTS:
        assert ours.encode(text, add_special_tokens=True) == ref(text)["input_ids"], text
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False), text
        ids = ours.encode(text, add_special_tokens=True)
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    assert ours.encode("<think>") == [ours.vocab_size - 2]
    assert ours.decode(ours.encode("<think>")) == "<think>"  # user-defined: not special, not skipped


def test_gguf_without_add_bos_flag_adds_no_bos(tmp_path):
    ours = Tokenizer.from_gguf(GGUFFile(write_gguf_variant(tmp_path / "v.gguf", add_bos=None)))
    assert ours.add_bos is False
    assert ours.encode("hi", add_special_tokens=True) == ours.encode("hi")


def test_sentencepiece_gguf_is_refused(tmp_path):
    path = write_gguf_variant(tmp_path / "spm.gguf", model="llama")
    with pytest.raises(ValueError, match="'llama'.*not supported"):
        Tokenizer.from_gguf(GGUFFile(path))


# ---- Hugging Face model folders -----------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_dir(ref, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hf_saved")
    ref.save_pretrained(str(d))
    return d


def test_hf_dir_token_ids_equal_transformers(ref, saved_dir):
    ours = Tokenizer.from_hf_dir(saved_dir)
    for name in SAMPLE_IDS:
        text = SAMPLES[name]
        assert ours.encode(text, add_special_tokens=True) == ref(text)["input_ids"], name
        assert ours.decode(ours.encode(text)) == ref.decode(ref.encode(text), skip_special_tokens=True)


def test_hf_dir_reads_special_tokens_and_saved_chat_template(ref, saved_dir):
    ours = Tokenizer.from_hf_dir(saved_dir)
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == (ref.bos_token, ref.eos_token, ref.pad_token)
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (1, 2, 2)
    assert ours.chat_template == ref.chat_template
    assert ours.vocab_size == len(ref)


def _copy_tokenizer(src: Path, dst: Path, config: dict) -> Path:
    dst.mkdir()
    (dst / "tokenizer.json").write_text((src / "tokenizer.json").read_text(encoding="utf-8"), encoding="utf-8")
    (dst / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return dst


def test_hf_dir_reads_chat_template_from_tokenizer_config(saved_dir, tmp_path):
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    d = _copy_tokenizer(saved_dir, tmp_path / "t", {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                                     "chat_template": template})
    from transformers import AutoTokenizer

    assert Tokenizer.from_hf_dir(d).chat_template == AutoTokenizer.from_pretrained(str(d)).chat_template == template


def _with_post_processor(d: Path, post_processor: dict | None) -> None:
    tj = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    tj["post_processor"] = post_processor
    (d / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")


# Llama-3 style: the tokenizer.json itself prepends BOS
_BOS_POST_PROCESSOR = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}},
}


def test_hf_dir_bos_follows_tokenizer_json_over_config_flag_as_transformers(saved_dir, tmp_path):
    # older transformers save special tokens as serialized AddedTokens
    bos = {"__type": "AddedToken", "content": "<|im_start|>", "lstrip": False, "normalized": False,
           "rstrip": False, "single_word": False, "special": True}
    d = _copy_tokenizer(saved_dir, tmp_path / "t", {"bos_token": bos, "eos_token": "<|im_end|>", "add_bos_token": True})
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(d))
    ours = Tokenizer.from_hf_dir(d)
    assert ours.bos_token == "<|im_start|>" and not ours.add_bos
    text = SAMPLES["english"]
    assert ours.encode(text, add_special_tokens=True) == ref(text)["input_ids"] == ours.encode(text)


def test_hf_dir_config_flag_adds_bos_when_tokenizer_json_has_no_post_processor(saved_dir, tmp_path):
    d = _copy_tokenizer(saved_dir, tmp_path / "t", {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                                     "add_bos_token": True})
    _with_post_processor(d, None)
    ours = Tokenizer.from_hf_dir(d)
    assert ours.add_bos
    assert ours.encode("hi", add_special_tokens=True) == [1, *ours.encode("hi")]


def test_hf_dir_bos_from_tokenizer_json_post_processor_equals_transformers(saved_dir, tmp_path):
    d = _copy_tokenizer(saved_dir, tmp_path / "t", {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
    _with_post_processor(d, _BOS_POST_PROCESSOR)
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(d))
    ours = Tokenizer.from_hf_dir(d)
    text = SAMPLES["code"]
    assert ours.encode(text, add_special_tokens=True) == ref(text)["input_ids"] == [1, *ours.encode(text)]
    assert ours.encode(text) == ref.encode(text, add_special_tokens=False)


def test_hf_dir_eos_ids_from_generation_config_list(saved_dir, tmp_path):
    d = _copy_tokenizer(saved_dir, tmp_path / "t", {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 5]}), encoding="utf-8")
    (d / "config.json").write_text(json.dumps({"eos_token_id": 7, "pad_token_id": 0}), encoding="utf-8")
    ours = Tokenizer.from_hf_dir(d)
    assert ours.eos_token_id == 2
    assert {2, 5, 7} <= ours.eos_token_ids
    assert ours.pad_token_id == 0


def test_hf_dir_special_tokens_from_special_tokens_map_and_model_config(saved_dir, tmp_path):
    d = _copy_tokenizer(saved_dir, tmp_path / "t", {})
    (d / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<|im_start|>"}), encoding="utf-8")
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0], "pad_token_id": 0}),
                                              encoding="utf-8")
    ours = Tokenizer.from_hf_dir(d)
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (1, 2, 0)


def test_hf_dir_without_tokenizer_json_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer.json"):
        Tokenizer.from_hf_dir(tmp_path)
