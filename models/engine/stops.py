"""When a sequence stops, and which of its text may be shown yet.

A sequence stops on a stop token id, on EOS (unless `ignore_eos`), on a stop string, or at
`max_new_tokens`. Nothing but the length limit is checked before `min_new_tokens` tokens exist (as vLLM).
The stopping token's own text is not part of the output (EOS, stop ids), and the output is cut just
before a stop string, which may be split over several tokens.

Streaming never shows text that a later token could turn into part of a stop string: the longest
suffix of the text that is a prefix of some stop string is held back until it is resolved.
"""
from __future__ import annotations

from collections.abc import Iterable

from models.params import GenerationParams


class StopChecker:
    """Per-sequence stop state. Plain Python: fed token ids and their decoded text pieces."""

    def __init__(self, params: GenerationParams, eos_token_ids: Iterable[int]):
        self.params = params
        self.eos_token_ids = frozenset(() if params.ignore_eos else eos_token_ids)
        self.stop_token_ids = frozenset(params.stop_token_ids)
        self.stops = params.stop
        self.max_stop_len = max((len(s) for s in self.stops), default=0)
        self.text = ""  # the output text so far, held-back part included
        self.emitted = 0  # len of the prefix of self.text already handed out

    def check_token(self, token_id: int, num_generated: int) -> str | None:
        """The finish reason the newly generated token (the num_generated-th) gives by itself, if any."""
        if num_generated >= self.params.min_new_tokens:
            if token_id in self.stop_token_ids:
                return "stop"
            if token_id in self.eos_token_ids:
                return "eos"
        return None

    def push_text(self, piece: str, num_generated: int) -> tuple[str, bool]:
        """Add a token's text; returns (text now safe to emit, whether a stop string completed).

        On a completed stop string the output is cut before it and everything left is returned.
        """
        if not piece:
            return "", False
        old_len = len(self.text)
        self.text += piece
        if not self.stops or num_generated < self.params.min_new_tokens:
            return self._emit(len(self.text)), False
        # a stop string completed now ends after old_len, so it starts after old_len - max_stop_len;
        # text already handed out is never taken back
        start = max(self.emitted, old_len - self.max_stop_len + 1, 0)
        cut = -1
        for s in self.stops:
            i = self.text.find(s, start)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
        if cut != -1:
            self.text = self.text[:cut]
            return self._emit(cut), True
        return self._emit(len(self.text) - self._held_back()), False

    def flush(self) -> str:
        """Release the held-back text: the sequence ended without it becoming a stop string."""
        return self._emit(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest unemitted suffix of the text that some stop string starts with."""
        longest = min(self.max_stop_len - 1, len(self.text) - self.emitted)
        for k in range(longest, 0, -1):
            tail = self.text[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0

    def _emit(self, end: int) -> str:
        delta = self.text[self.emitted:end]
        self.emitted = max(self.emitted, end)
        return delta
