"""One request's life inside the engine: its tokens, its block table, how far its cache is computed, its text.

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
    WAITING = "waiting"  # queued (or preempted), holds no blocks
    RUNNING = "running"  # holds blocks: prefilling its prompt, then decoding
    FINISHED = "finished"


class Sequence:
    """A request being generated.

    Invariants: positions [0, num_computed) of its blocks hold this sequence's keys and values (or, for its
    first num_shared_blocks blocks, will once their writer has computed them). While prefilling,
    num_computed < len(prompt_ids); once decoding, num_computed <= num_tokens - 1, and a decode step feeds
    token num_computed: the last sampled one when num_computed == num_tokens - 1 (the step samples the next),
    an earlier one while it recomputes after a preemption (the step samples nothing for it).
    """

    def __init__(self, request: GenerationRequest, prompt_ids: list[int], *, eos_token_ids: tuple[int, ...] = (),
                 detokenizer: Detokenizer | None = None, listener: EventListener | None = None):
        self.request = request
        self.request_id = request.request_id
        self.params: GenerationParams = request.params
        self.prompt_ids = list(prompt_ids)
        self.output_ids: list[int] = []
        self.status = SeqStatus.WAITING
        self.blocks: list[int] = []  # the block table while running: block i holds positions i*B..(i+1)*B-1
        self.block_hashes: list[bytes] = []  # prefix hash of each whole block named so far (block_manager.py)
        self.num_shared_blocks = 0  # leading blocks taken from the prefix cache (another sequence computes them)
        self.prefix_ready = False  # those shared blocks are all computed
        self.num_computed = 0
        self.preemptions = 0  # times its blocks were taken back and its tokens queued for recomputing
        self.started = False  # has joined the batch once
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

    def token_at(self, i: int) -> int:
        n = len(self.prompt_ids)
        return self.prompt_ids[i] if i < n else self.output_ids[i - n]

    @property
    def samples_at_decode(self) -> bool:
        """A decode step of this sequence samples a new token (it is not recomputing known ones)."""
        return self.num_computed == self.num_tokens - 1

    @property
    def text(self) -> str:
        return self.stop.text

    def __repr__(self) -> str:
        return (f"Sequence({self.request_id!r}, {self.status.value}, blocks={len(self.blocks)}, "
                f"computed={self.num_computed}/{self.num_tokens})")
