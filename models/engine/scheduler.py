"""Which tokens go into the next forward step. Plain Python, no torch.

Each step: every decoding sequence gets one token; then prompt chunks fill a budget of `prefill_chunk`
prompt tokens: first the sequences already prefilling (oldest first), then waiting ones, admitted in
arrival order while a slot is free. A long prompt is thus spread over several steps, interleaved with
the others' decoding, instead of stalling them. A waiting request that finds no free slot waits; later
arrivals do not overtake it.

Slot compaction: the network attends all decode tokens in one call over their slots' keys; when the
decode slots are 0..d-1 in order it takes a view of the cache, otherwise it must gather (copy) every
decoding sequence's keys and values, in every layer, at every step (measured: about a third of the
matrix-multiply time at 64 sequences). So each step moves decoding sequences that sit at slot >= d into
the free slots below d (one copy of their computed prefix, once), and lays decode tokens out in slot order.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from models.engine.sequence import SeqStatus, Sequence
from models.engine.slots import SlotManager


@dataclass
class PrefillChunk:
    seq: Sequence
    start: int  # first prompt position of the chunk
    length: int

    @property
    def completes_prompt(self) -> bool:
        return self.start + self.length == len(self.seq.prompt_ids)


@dataclass
class ScheduledStep:
    decodes: list[Sequence] = field(default_factory=list)
    prefills: list[PrefillChunk] = field(default_factory=list)
    # (src_slot, dst_slot, length): prefix copies to make, in order, before the forward
    copies: list[tuple[int, int, int]] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)

    @property
    def sampled(self) -> list[Sequence]:
        """The sequences that get a new token from this step, in the order of the network's logits rows."""
        return self.decodes + [c.seq for c in self.prefills if c.completes_prompt]

    @property
    def num_tokens(self) -> int:
        return len(self.decodes) + sum(c.length for c in self.prefills)

    def __bool__(self) -> bool:
        return bool(self.decodes or self.prefills)


class Scheduler:
    def __init__(self, slots: SlotManager, max_batch: int, prefill_chunk: int):
        if max_batch < 1 or prefill_chunk < 1:
            raise ValueError("max_batch and prefill_chunk must be at least 1")
        self.slots = slots
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order

    def add(self, seq: Sequence) -> None:
        """Queue `seq` behind every waiting sequence of its priority or higher (arrival order within one)."""
        seq.status = SeqStatus.WAITING
        priority = seq.request.priority
        if not self.waiting or self.waiting[-1].request.priority >= priority:
            self.waiting.append(seq)  # the common case: no reordering
            return
        for i, other in enumerate(self.waiting):
            if other.request.priority < priority:
                self.waiting.insert(i, seq)
                return

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledStep:
        step = ScheduledStep()
        budget = self.prefill_chunk
        for seq in self.running:
            if not seq.is_prefilling:
                step.decodes.append(seq)
        for seq in self.running:
            if budget and seq.is_prefilling:
                budget -= self._chunk(step, seq, budget)
        while budget and self.waiting and len(self.running) < self.max_batch and self.slots.num_free:
            seq = self.waiting.popleft()
            self._admit(step, seq)
            budget -= self._chunk(step, seq, budget)
        self._compact(step)
        step.decodes.sort(key=lambda s: s.held_slot)
        return step

    def _compact(self, step: ScheduledStep) -> None:
        """Move decoding sequences into slots 0..d-1 (d of them), by prefix copies made before the forward."""
        d = len(step.decodes)
        high = sorted((s for s in step.decodes if s.held_slot >= d), key=lambda s: s.held_slot, reverse=True)
        if not high:
            return
        by_slot = {s.slot: s for s in self.running}
        free = set(self.slots.free_slots())
        free_high = sorted(f for f in free if f >= d)
        for slot in range(d):
            if not high:
                break
            occupant = by_slot.get(slot)
            if occupant is not None and occupant.is_prefilling:
                # a prompt still being prefilled sits here: move it up, out of the decode range
                if not free_high:
                    continue
                self._move(step, occupant, free_high.pop())
                by_slot.pop(slot)
                occupant = None
            elif occupant is None and slot not in free:
                continue
            if occupant is None:
                self._move(step, high.pop(0), slot)

    def _move(self, step: ScheduledStep, seq: Sequence, dst: int) -> None:
        self.slots.take(dst)
        if seq.num_computed:
            step.copies.append((seq.held_slot, dst, seq.num_computed))
        self.slots.release(seq.held_slot, seq.token_ids(seq.num_computed))  # it still holds those tokens
        seq.slot = dst

    def _admit(self, step: ScheduledStep, seq: Sequence) -> None:
        lenders = [(s.held_slot, s.token_ids(s.num_computed)) for s in self.running if s.num_computed]
        grant = self.slots.acquire(seq.prompt_ids, lenders)
        if grant.copy is not None:
            step.copies.append((grant.copy[0], grant.slot, grant.copy[1]))
        seq.slot = grant.slot
        seq.num_computed = grant.reused
        seq.reused_tokens = grant.reused
        seq.status = SeqStatus.RUNNING
        self.running.append(seq)
        step.admitted.append(seq)

    @staticmethod
    def _chunk(step: ScheduledStep, seq: Sequence, budget: int) -> int:
        length = min(budget, len(seq.prompt_ids) - seq.num_computed)
        step.prefills.append(PrefillChunk(seq, seq.num_computed, length))
        return length

    def advance(self, step: ScheduledStep) -> None:
        """After the forward: the step's tokens are now in the cache."""
        for seq in step.decodes:
            seq.num_computed += 1
        for chunk in step.prefills:
            chunk.seq.num_computed += chunk.length

    def finish(self, seq: Sequence, keep_cache: bool = True) -> None:
        """Take a sequence out (finished, canceled or failed); its slot's computed tokens stay reusable
        unless keep_cache is False."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
            self.slots.release(seq.held_slot, seq.token_ids(seq.num_computed) if keep_cache else ())
        elif seq.status is SeqStatus.WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        seq.status = SeqStatus.FINISHED
