"""The model's tokenizer: a Hugging Face `tokenizers.Tokenizer` built from a GGUF vocabulary or read
from a Hugging Face model folder, plus what generation needs to know about special tokens.

A GGUF file carries no `tokenizer.json`, only llama.cpp's metadata (tokens, merges, token types,
special token ids). `from_gguf` rebuilds from those the same tokenizer that transformers builds
for the file (`AutoTokenizer.from_pretrained(dir, gguf_file=name)`), so token ids agree with it.
Only byte-level BPE ("gpt2") vocabularies are supported; SentencePiece ("llama") and others are refused.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Regex, Tokenizer as HFTokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

if TYPE_CHECKING:
    from models.gguf import GGUFFile

# llama.cpp token types (tokenizer.ggml.token_type)
_CONTROL, _USER_DEFINED = 3, 4

# Split regexes for the `tokenizer.ggml.pre` names whose merges were learned on text split differently
# from GPT-2's default ByteLevel regex. The same names and patterns as transformers' GGUF conversion
# (integrations/gguf/gguf_tokenizer_mapping.py); a name not listed keeps GPT-2's regex, as there.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZER_SPLITS: dict[str, str] = {
    **dict.fromkeys(
        ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
         "jina-v5-nano", "dbrx", "smaug-bpe"), _LLAMA3_SPLIT),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2_SPLIT),
    "qwen35": _QWEN35_SPLIT,
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O_SPLIT),
}

# Special tokens that end a turn or a document in common vocabularies. llama.cpp stops on these too
# (its "end of generation" set), even where the file's eos id names only one of them: SmolLM2's eos
# is <|im_end|>, but a model that writes <|endoftext|> has finished as well.
_END_OF_GENERATION_TEXTS = frozenset({
    "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<|end|>",
    "<end_of_turn>", "<|return|>", "<|call|>", "<EOT>", "<｜end▁of▁sentence｜>",
})


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used to spell byte-level BPE tokens."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            # bytes without a printable Latin-1 glyph (controls, space, ...) are shifted above U+00FF
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Tokenizer:
    """A text <-> token id codec with the special tokens generation needs.

    Build it with `from_gguf` or `from_hf_dir`; the constructor takes an already configured backend.
    """

    def __init__(
        self,
        backend: HFTokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        add_bos: bool = False,
        extra_eos_ids: Iterable[int] = (),
        chat_template: str | None = None,
    ):
        self._tk = backend
        self._bos_token, self._eos_token = bos_token, eos_token
        self._pad_token, self._unk_token = pad_token, unk_token
        self._bos_id = self._lookup(bos_token)
        self._eos_id = self._lookup(eos_token)
        self._pad_id = self._lookup(pad_token)
        self._add_bos = bool(add_bos) and self._bos_id is not None
        self._chat_template = chat_template
        ends = {self._eos_id} | set(extra_eos_ids)
        ends |= {i for i, t in backend.get_added_tokens_decoder().items()
                 if t.special and t.content in _END_OF_GENERATION_TEXTS}
        self._eos_ids = frozenset(i for i in ends if i is not None)

    def _lookup(self, token: str | None) -> int | None:
        return None if token is None else self._tk.token_to_id(token)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Tokenizer:
        """The tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata (byte-level BPE only)."""
        model = gguf.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(
                f"tokenizer model {model!r} in {gguf.path.name} is not supported: only byte-level BPE "
                "('gpt2') GGUF vocabularies are (SentencePiece 'llama' vocabularies are not)"
            )
        tokens: list[str] = gguf.get("tokenizer.ggml.tokens")
        merges: list[str] = gguf.get("tokenizer.ggml.merges")
        if not tokens or merges is None:
            raise ValueError(f"{gguf.path.name} has no tokenizer.ggml.tokens / tokenizer.ggml.merges")
        types: Sequence[int] = gguf.get("tokenizer.ggml.token_type") or ()
        backend = _byte_level_bpe(tokens, merges, gguf.get("tokenizer.ggml.pre"))
        _add_gguf_special_tokens(backend, tokens, types)

        def token(key: str) -> str | None:
            i = gguf.get(f"tokenizer.ggml.{key}")
            return tokens[i] if i is not None and 0 <= i < len(tokens) else None

        specials = {name: token(key) for name, key in (
            ("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
            ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id"),
        )}
        _add_missing_specials(backend, specials.values())
        extra = [gguf.get(f"tokenizer.ggml.{k}") for k in ("eot_token_id", "eom_token_id")]
        return cls(
            backend,
            **specials,
            add_bos=bool(gguf.get("tokenizer.ggml.add_bos_token", False)),
            extra_eos_ids=[i for i in extra if isinstance(i, int)],
            chat_template=gguf.get("tokenizer.chat_template"),
        )

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> Tokenizer:
        """The tokenizer of a Hugging Face model folder: `tokenizer.json` and `tokenizer_config.json`,
        with the chat template from `chat_template.jinja` or the config, and extra end-of-generation
        ids from `generation_config.json` / `config.json` (`eos_token_id` may be a list there).
        BOS is wanted when tokenizer.json's post-processor adds it, else when the config's
        `add_bos_token` says so."""
        path = Path(path)
        tj = path / "tokenizer.json"
        if not tj.is_file():
            raise ValueError(f"{path} has no tokenizer.json")
        backend = HFTokenizer.from_file(str(tj))
        config = _read_json(path / "tokenizer_config.json")
        # older folders keep the special tokens in special_tokens_map.json only
        special_map = _read_json(path / "special_tokens_map.json")
        specials = {name: _token_content(config.get(name, special_map.get(name)))
                    for name in ("bos_token", "eos_token", "unk_token", "pad_token")}
        model_ids = _model_token_ids(path)
        for name in ("bos_token", "eos_token", "pad_token"):
            # a token the tokenizer config does not name, taken from the model's config by id
            i = model_ids[name]
            if specials[name] is None and i is not None:
                specials[name] = backend.id_to_token(i)
        _add_missing_specials(backend, specials.values())
        # encode() adds BOS itself. Whether the model wants one: tokenizer.json's post-processor says, as
        # in transformers 5, which ignores the config's add_bos_token when there is a tokenizer.json; the
        # flag only counts where the file has no post-processor (transformers 4 and llama.cpp honour it)
        if backend.post_processor is not None:
            bos_id = backend.token_to_id(specials["bos_token"]) if specials["bos_token"] else None
            add_bos = bos_id is not None and backend.encode("", add_special_tokens=True).ids[:1] == [bos_id]
        else:
            add_bos = bool(config.get("add_bos_token", False))
        return cls(
            backend,
            **specials,
            add_bos=add_bos,
            extra_eos_ids=model_ids["eos_token_ids"],
            chat_template=_read_chat_template(path, config),
        )

    # ---- codec --------------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written in the text (`<|im_start|>`) become their ids.
        `add_special_tokens` prepends BOS when the model wants one (`add_bos`)."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, not {type(text).__name__}")
        ids = self._tk.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self._add_bos and self._bos_id is not None:
            return [self._bos_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """The text of `ids`; bytes that do not form valid UTF-8 become U+FFFD."""
        return self._tk.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str:
        """The vocabulary entry for id `i` as the vocabulary spells it (byte-level: "Ġworld" for " world")."""
        token = self._tk.id_to_token(i)
        if token is None:
            raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return token

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry, or None."""
        return self._tk.token_to_id(token)

    def is_special(self, i: int) -> bool:
        """Whether id `i` is a special token (dropped by `decode(skip_special_tokens=True)`)."""
        t = self._tk.get_added_tokens_decoder().get(i)
        return bool(t is not None and t.special)

    # ---- properties ---------------------------------------------------------------------------

    @property
    def backend(self) -> HFTokenizer:
        return self._tk

    @property
    def vocab_size(self) -> int:
        return self._tk.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token(self) -> str | None:
        return self._bos_token

    @property
    def eos_token(self) -> str | None:
        return self._eos_token

    @property
    def pad_token(self) -> str | None:
        return self._pad_token

    @property
    def unk_token(self) -> str | None:
        return self._unk_token

    @property
    def bos_token_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_token_id(self) -> int | None:
        return self._eos_id

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Every id that ends generation: the eos id, the model's other end ids, and end-of-turn/document
        special tokens such as <|im_end|> and <|endoftext|>."""
        return self._eos_ids

    @property
    def pad_token_id(self) -> int | None:
        return self._pad_id

    @property
    def chat_template(self) -> str | None:
        return self._chat_template

    @property
    def add_bos(self) -> bool:
        return self._add_bos


def _byte_level_bpe(tokens: list[str], merges: list[str], pre: str | None) -> HFTokenizer:
    alphabet = byte_alphabet()
    spelled = set(alphabet.values())
    # a vocabulary entry outside the byte alphabet (rare llama.cpp files) is respelled from its UTF-8 bytes
    vocab = {
        t if set(t) <= spelled else "".join(alphabet[b] for b in t.encode("utf-8")): i for i, t in enumerate(tokens)
    }
    pairs = []
    for m in merges:
        parts = m.split(" ")
        if len(parts) != 2:
            raise ValueError(f"GGUF merge {m!r} is not two tokens separated by one space")
        pairs.append((parts[0], parts[1]))
    tk = HFTokenizer(BPE(vocab=vocab, merges=pairs, dropout=None, continuing_subword_prefix="",
                         end_of_word_suffix="", fuse_unk=False))
    split = PRE_TOKENIZER_SPLITS.get(pre or "")
    if split is None:
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tk.decoder = decoders.ByteLevel()
    return tk


def _add_gguf_special_tokens(tk: HFTokenizer, tokens: list[str], types: Sequence[int]) -> None:
    """Control tokens become special added tokens, user-defined ones plain added tokens, so both
    are matched whole in text instead of being cut into byte pieces."""
    spelled = set(byte_alphabet().values())
    # a "control" token spelled outside the byte alphabet is a llama.cpp mislabel; adding it would
    # grow the vocabulary past the model's embedding, so it is skipped (as transformers does)
    control = [AddedToken(t, normalized=False, special=True)
               for t, ty in zip(tokens, types, strict=False) if ty == _CONTROL and set(t) <= spelled]
    if control:
        tk.add_special_tokens(control)
    vocab = tk.get_vocab(with_added_tokens=True)
    user = [AddedToken(t, normalized=False, special=False)
            for t, ty in zip(tokens, types, strict=False) if ty == _USER_DEFINED and t in vocab]
    if user:
        tk.add_tokens(user)


def _add_missing_specials(tk: HFTokenizer, names: Iterable[str | None]) -> None:
    """bos/eos/unk/pad that are not yet added tokens are added as special ones (as transformers does)."""
    present = {t.content for t in tk.get_added_tokens_decoder().values()}
    missing = [AddedToken(n, special=True, normalized=False) for n in dict.fromkeys(names) if n and n not in present]
    if missing:
        tk.add_special_tokens(missing)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} does not hold a JSON object")
    return data


def _model_token_ids(path: Path) -> dict[str, Any]:
    """bos/eos/pad ids from generation_config.json over config.json; every eos id of both (a list there
    names several end-of-generation tokens)."""
    found: dict[str, Any] = {"bos_token": None, "eos_token": None, "pad_token": None, "eos_token_ids": []}
    for name in ("generation_config.json", "config.json"):
        cfg = _read_json(path / name)
        eos = cfg.get("eos_token_id")
        eos_ids = [eos] if isinstance(eos, int) else [i for i in eos or () if isinstance(i, int)]
        found["eos_token_ids"] += eos_ids
        for key, value in (("bos_token", cfg.get("bos_token_id")), ("pad_token", cfg.get("pad_token_id")),
                           ("eos_token", eos_ids[0] if eos_ids else None)):
            if found[key] is None and isinstance(value, int):
                found[key] = value
    return found


def _token_content(value: Any) -> str | None:
    """A special token from tokenizer_config.json: a string or a serialized AddedToken."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_chat_template(path: Path, config: dict[str, Any]) -> str | None:
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        # named templates [{"name": ..., "template": ...}]: the default one is the chat template
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None
