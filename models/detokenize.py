"""Streaming detokenization: the text each newly generated token adds, in O(1) per token.

Byte-level BPE cuts multi-byte characters (emoji, CJK) across tokens, so the text of one token is
not always whole. Decoding everything again at every step would be correct but O(n) per token.
Instead, as vLLM and TGI do, only a small window is decoded: the tokens of the last emitted chunk
(`prefix_offset:read_offset`, context for decoders that treat the first token specially, such as
SentencePiece's leading space) followed by the tokens not yet emitted (`read_offset:`). The new text
is the window's text past the prefix's. While it ends in U+FFFD, a character is still incomplete and
the pending tokens are held back.
"""
from __future__ import annotations

from collections.abc import Sequence

from models.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"
# prompt tokens decoded as context before the first generated token
_PROMPT_CONTEXT = 5


class IncrementalDetokenizer:
    """Turns generated token ids into text one token at a time.

    `text` equals `tokenizer.decode(generated_ids)` whenever nothing is held back (`pending` is
    False). With `prompt_ids`, the last prompt tokens serve as decoding context, so the text is what
    the generated tokens read as after the prompt; that differs from a standalone decode only for
    decoders that drop a leading space at the start of a sequence (SentencePiece), never for
    byte-level BPE.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] | None = None,
                 skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        context = list(prompt_ids or ())[-_PROMPT_CONTEXT:]
        # the context must start on a character boundary, or its leading U+FFFD would be taken for
        # an incomplete character forever; drop tokens from its front until it does
        while context and self._decode(context).startswith(_REPLACEMENT):
            context.pop(0)
        self._window: list[int] = context  # tokens from prefix_offset on
        self._read = len(context)  # index in _window of the first token not yet emitted
        self._generated: list[int] = []
        self._parts: list[str] = []

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text it completes ("" while a character is partial)."""
        self._generated.append(token_id)
        self._window.append(token_id)
        prefix = self._decode(self._window[:self._read])
        full = self._decode(self._window)
        if len(full) <= len(prefix) or full.endswith(_REPLACEMENT):
            # nothing new (a skipped special token) or a character still cut: hold the pending tokens
            return ""
        new = full[len(prefix):]
        # the emitted chunk becomes the next window's context: prefix_offset = read_offset
        self._window = self._window[self._read:]
        self._read = len(self._window)
        self._parts.append(new)
        return new

    def flush(self) -> str:
        """At the end of generation: the held-back text as it decodes (incomplete bytes as U+FFFD)."""
        prefix = self._decode(self._window[:self._read])
        full = self._decode(self._window)
        new = full[len(prefix):] if len(full) > len(prefix) else ""
        self._window = self._window[self._read:]
        self._read = len(self._window)
        if new:
            self._parts.append(new)
        return new

    @property
    def pending(self) -> bool:
        """Whether tokens are held back because the text they make is not complete yet."""
        return self._read < len(self._window)

    @property
    def text(self) -> str:
        """All text emitted so far."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def token_ids(self) -> list[int]:
        """The generated token ids pushed so far."""
        return list(self._generated)
