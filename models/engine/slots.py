"""KV-cache slots: who owns which, and which free slot still holds a reusable prompt prefix.

Every running sequence owns one slot (max_len positions) for its whole life. A finished sequence's slot
keeps its keys and values: it is free, but remembers the tokens it holds, and a later prompt that starts
the same way (the same system prompt, the same conversation) reuses them instead of recomputing them.
Free slots are handed out least valuable first: never used, then least recently released.
Plain Python, no torch.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SlotGrant:
    """A slot for a new sequence. `reused` leading prompt tokens are already in place once `copy` is done:
    copy = (src_slot, length) means positions [0, length) of src_slot must first be copied into `slot`."""

    slot: int
    reused: int
    copy: tuple[int, int] | None = None


def common_prefix_len(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """Length of the common prefix of a and b, at most limit."""
    n = min(len(a), len(b), limit)
    # compare in blocks first: list slices compare in C
    i = 0
    while i + 32 <= n and a[i:i + 32] == b[i:i + 32]:
        i += 32
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotManager:
    """Allocates slots 0..n_slots-1; `min_prefix`: shortest prefix worth reusing (0 turns the cache off)."""

    def __init__(self, n_slots: int, min_prefix: int = 16):
        if n_slots < 1:
            raise ValueError("n_slots must be at least 1")
        self.n_slots = n_slots
        self.min_prefix = min_prefix
        # free slot -> the tokens its cache holds (empty: nothing reusable); oldest release first
        self._free: OrderedDict[int, list[int]] = OrderedDict((s, []) for s in range(n_slots))
        self.reused_tokens = 0  # total prompt tokens served from the cache, for reports

    @property
    def num_free(self) -> int:
        return len(self._free)

    def acquire(self, prompt_ids: Sequence[int], running: Iterable[tuple[int, Sequence[int]]] = ()) -> SlotGrant:
        """A free slot for a new prompt (the caller checks num_free first).

        running: (slot, tokens whose keys and values are computed) of the running sequences, which can lend
        a prefix by copy. At least the prompt's last token is always left to compute, for its logits.
        """
        if not self._free:
            raise RuntimeError("no free slot")
        limit = len(prompt_ids) - 1
        best_free, best_free_len = None, 0
        best_run, best_run_len = None, 0
        if self.min_prefix > 0 and limit >= self.min_prefix:
            for slot, tokens in self._free.items():
                n = common_prefix_len(tokens, prompt_ids, limit)
                if n > best_free_len:
                    best_free, best_free_len = slot, n
            for slot, computed in running:
                n = common_prefix_len(computed, prompt_ids, limit)
                if n > best_run_len:
                    best_run, best_run_len = slot, n
        if best_free is not None and best_free_len >= max(self.min_prefix, best_run_len):
            del self._free[best_free]
            self.reused_tokens += best_free_len
            return SlotGrant(best_free, best_free_len)
        slot = self._take_least_valuable()
        if best_run is not None and best_run_len >= self.min_prefix:
            self.reused_tokens += best_run_len
            return SlotGrant(slot, best_run_len, (best_run, best_run_len))
        return SlotGrant(slot, 0)

    def release(self, slot: int, cached_tokens: Sequence[int] = ()) -> None:
        """Free a slot; cached_tokens: the tokens whose keys and values it holds at positions 0.. (may be reused)."""
        if slot in self._free or not 0 <= slot < self.n_slots:
            raise ValueError(f"slot {slot} is not in use")
        self._free[slot] = list(cached_tokens) if self.min_prefix > 0 else []

    def take(self, slot: int) -> None:
        """Take a particular free slot (its cached tokens are forgotten)."""
        del self._free[slot]

    def free_slots(self) -> list[int]:
        return sorted(self._free)

    def _take_least_valuable(self) -> int:
        # a never-used slot, the highest first: new sequences start at the top, out of the low range
        # the scheduler keeps for decoding sequences (see Scheduler._compact)
        fresh = [slot for slot, tokens in self._free.items() if not tokens]
        if fresh:
            slot = max(fresh)
            del self._free[slot]
            return slot
        slot, _ = self._free.popitem(last=False)  # the least recently released
        return slot
