"""One request's life inside the engine: its tokens, its slot, how far its cache is computed, its text.

Plain Python (no torch): the scheduler and its tests use it without a device. The generator is made by
the model runner and only carried here.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Protocol

from models.engine.stops import StopChecker
from models.engine.types import EventListener, GenerationRequest
from models.params import GenerationParams

if TYPE_CHECKING:
    import torch


class Detokenizer(Protocol):
    def push(self, token_id: int) -> str: ...

    def flush(self) -> str: ...


class SeqStatus(enum.Enum):
    WAITING = "waiting"  # queued, no slot yet
    RUNNING = "running"  # owns a slot: prefilling its prompt, then decoding
    FINISHED = "finished"


class Sequence:
    """A request being generated.

    Invariants: positions [0, num_computed) of the slot hold this sequence's keys and values. While
    prefilling, num_computed < len(prompt_ids); once decoding, num_computed == num_tokens - 1 (the last
    sampled token is fed at the next step).
    """

    def __init__(self, request: GenerationRequest, prompt_ids: list[int], *, eos_token_ids: tuple[int, ...] = (),
                 detokenizer: Detokenizer | None = None, listener: EventListener | None = None):
        self.request = request
        self.request_id = request.request_id
        self.params: GenerationParams = request.params
        self.prompt_ids = list(prompt_ids)
        self.output_ids: list[int] = []
        self.status = SeqStatus.WAITING
        self.slot: int | None = None  # the KV slot while running (held_slot); None while waiting
        self.num_computed = 0
        self.generator: torch.Generator | None = None
        self.detokenizer = detokenizer
        self.stop = StopChecker(self.params, eos_token_ids)
        self.listener = listener
        self.logprobs: list[dict[str, Any]] | None = [] if self.params.logprobs is not None else None
        self.finish_reason: str | None = None
        self.canceled = False  # set by any thread; acted on by the engine thread between steps
        self.reused_tokens = 0  # prompt tokens taken from the prefix cache

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def is_prefilling(self) -> bool:
        return self.num_computed < len(self.prompt_ids)

    def token_ids(self, end: int | None = None) -> list[int]:
        """Prompt then generated tokens, the first `end` of them (all by default)."""
        ids = self.prompt_ids + self.output_ids
        return ids if end is None else ids[:end]

    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    @property
    def text(self) -> str:
        return self.stop.text

    @property
    def held_slot(self) -> int:
        """The slot of a running sequence; a waiting one holds none (RuntimeError)."""
        if self.slot is None:
            raise RuntimeError(f"{self!r} holds no slot")
        return self.slot

    def __repr__(self) -> str:
        return (f"Sequence({self.request_id!r}, {self.status.value}, slot={self.slot}, "
                f"computed={self.num_computed}/{self.num_tokens})")
