"""Streaming detokenization yields exactly the text a full decode gives, never a broken character."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, normalizers, trainers

from models.detokenize import IncrementalDetokenizer
from models.tokenizer import Tokenizer
from tests.models._tok_fixtures import SAMPLES, our_tokenizer

MULTIBYTE = [SAMPLES["emoji"], SAMPLES["japanese"], SAMPLES["chinese"], SAMPLES["accents"],
             "🎉日本👨‍👩‍👧‍👦中文🏳️‍🌈" * 3]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return our_tokenizer()


def _stream(tok, ids, **kwargs) -> tuple[IncrementalDetokenizer, list[str]]:
    detok = IncrementalDetokenizer(tok, **kwargs)
    return detok, [detok.push(i) for i in ids]


@pytest.mark.parametrize("text", MULTIBYTE)
def test_text_equals_full_decode_whenever_nothing_is_held_back(tok, text):
    ids = tok.encode(text)
    detok = IncrementalDetokenizer(tok)
    for k, i in enumerate(ids):
        detok.push(i)
        if not detok.pending:
            assert detok.text == tok.decode(ids[:k + 1])
    assert not detok.pending and detok.text == tok.decode(ids) == text


@pytest.mark.parametrize("text", MULTIBYTE)
def test_deltas_concatenate_to_the_text_without_replacement_characters(tok, text):
    detok, deltas = _stream(tok, tok.encode(text))
    assert "".join(deltas) == detok.text == text
    assert not any("\ufffd" in d for d in deltas)


def test_partial_character_is_held_back_until_complete(tok):
    ids = tok.encode("🎉")
    assert len(ids) > 1  # byte-level BPE spells this emoji in several tokens
    detok, deltas = _stream(tok, ids)
    assert deltas[:-1] == [""] * (len(ids) - 1)
    assert deltas[-1] == "🎉"


def test_flush_gives_incomplete_bytes_as_a_full_decode_does(tok):
    ids = tok.encode("ok 🎉")
    detok = IncrementalDetokenizer(tok)
    for i in ids[:-1]:
        detok.push(i)
    assert detok.pending
    held = detok.flush()
    assert "\ufffd" in held
    assert detok.text == tok.decode(ids[:-1]) and not detok.pending


def test_special_tokens_are_skipped_by_default(tok):
    ids = tok.encode("Hi<|im_end|> there")
    detok, deltas = _stream(tok, ids)
    assert detok.text == tok.decode(ids) == "Hi there"
    assert "".join(deltas) == "Hi there"


def test_special_tokens_are_kept_when_asked(tok):
    ids = tok.encode("Hi<|im_end|>")
    detok, deltas = _stream(tok, ids, skip_special_tokens=False)
    assert detok.text == "Hi<|im_end|>"


def test_prompt_context_does_not_change_byte_level_text(tok):
    prompt = tok.encode("Say it in Japanese: 日本🎉")
    generated = tok.encode(" 東京は晴れ👍🏽です")
    with_prompt, _ = _stream(tok, generated, prompt_ids=prompt)
    # a prompt cut mid-character leaves its context starting on a broken byte: still the same text
    cut, _ = _stream(tok, generated, prompt_ids=prompt[:-1])
    assert with_prompt.text == cut.text == tok.decode(generated)


def test_work_per_token_does_not_grow_with_length(tok):
    decoded_lengths: list[int] = []

    class Counting:
        def decode(self, ids, skip_special_tokens=True):
            decoded_lengths.append(len(ids))
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    ids = tok.encode(" ".join(MULTIBYTE) * 20)
    detok, _ = _stream(Counting(), ids)
    assert len(ids) > 1000
    assert detok.text == tok.decode(ids)
    assert max(decoded_lengths) <= 8


def _sentencepiece_style_dir(path: Path) -> Path:
    """A tiny Llama-2-style tokenizer: '▁' for spaces, byte fallback for unknown characters, and a
    decoder that strips the sequence's leading space."""
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=40,
                                  show_progress=False)
    spacer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    learner = HFTokenizer(models.BPE(unk_token="<unk>"))
    learner.normalizer = spacer
    learner.train_from_iterator(["the quick brown fox jumps over the lazy dog", "hello world, a small corpus"] * 20,
                                trainer)
    learned = json.loads(learner.to_str())["model"]
    tokens = sorted(learned["vocab"], key=learned["vocab"].get)
    # byte tokens <0x00>..<0xFF> right after the specials, as in Llama 2's vocabulary
    vocab = {t: i for i, t in enumerate(tokens[:3] + [f"<0x{b:02X}>" for b in range(256)] + tokens[3:])}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tk = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tk.normalizer = spacer
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    path.mkdir()
    tk.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return path


def test_byte_fallback_tokenizer_streams_whole_characters(tmp_path):
    sp = Tokenizer.from_hf_dir(_sentencepiece_style_dir(tmp_path / "sp"))
    text = "hello 日本 world 🎉! the fox"
    ids = sp.encode(text)
    assert sp.id_to_token(ids[1]) == "<0xE6>"  # 日 falls back to its UTF-8 bytes
    detok, deltas = _stream(sp, ids)
    assert detok.text == sp.decode(ids) == text
    assert not any("\ufffd" in d for d in deltas)


def test_prompt_context_keeps_the_leading_space_a_standalone_decode_strips(tmp_path):
    sp = Tokenizer.from_hf_dir(_sentencepiece_style_dir(tmp_path / "sp"))
    prompt = sp.encode("the quick")
    generated = sp.encode("brown fox")  # starts with the word-start piece "▁"...
    in_context, _ = _stream(sp, generated, prompt_ids=prompt)
    alone, _ = _stream(sp, generated)
    assert sp.decode(prompt + generated) == "the quick brown fox"
    assert in_context.text == " brown fox"
    assert alone.text == sp.decode(generated) == "brown fox"
