"""Which tokens go into the next forward step. Plain Python, no torch.

Each step: every decoding sequence gets one token; then prompt chunks fill a budget of `prefill_chunk`
prompt tokens (given `prefill_span`, what that many cost at a context's start: a chunk later in a long prompt
costs more a token, models/engine/prefill_cost.py): first the sequences already prefilling (oldest first),
then waiting ones, admitted in
arrival order while the batch has room and the pool has blocks for the prompt. A long prompt is thus spread
over several steps, interleaved with the others' decoding, instead of stalling them. A waiting request that
does not fit waits; later arrivals do not overtake it.

Blocks (models/engine/block_manager.py): a sequence takes its prompt's blocks when admitted and one more
block each time it decodes past its last. When a decoding sequence needs a block and the pool has none, the
most recently admitted sequence is preempted: its blocks go back to the pool (whole computed blocks stay
cached), and it returns to the front of the queue with its tokens so far. When it is admitted again it
recomputes them exactly as they were first computed: its prompt by prefill (or from the cache), its
generated tokens one decode step each without sampling, so its answer is the one it would have had. The
oldest sequence is never preempted for a newer one, and a pool holds at least one sequence of max_len, so
every admitted request finishes.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from models.engine.block_manager import BlockManager
from models.engine.prefill_cost import chunk_cost, chunk_length
from models.engine.sequence import SeqStatus, Sequence
from models.kv_blocks import BLOCK_SIZE


@dataclass
class PrefillChunk:
    seq: Sequence
    start: int  # first prompt position of the chunk
    length: int

    @property
    def completes_prompt(self) -> bool:
        return self.start + self.length == len(self.seq.prompt_ids)

    @property
    def samples(self) -> bool:
        """The chunk ends its prompt, and no token follows it yet (not a recompute after a preemption)."""
        return self.completes_prompt and not self.seq.output_ids


@dataclass
class ScheduledStep:
    decodes: list[Sequence] = field(default_factory=list)
    prefills: list[PrefillChunk] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)  # joined the batch for the first time
    preempted: list[Sequence] = field(default_factory=list)
    # the sequences that get a new token from this step, in the order of the network's logits rows (fixed
    # when the step is planned: advance() moves the sequences on)
    sampled: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.decodes) + sum(c.length for c in self.prefills)

    def __bool__(self) -> bool:
        return bool(self.decodes or self.prefills)


class Scheduler:
    def __init__(self, blocks: BlockManager, max_batch: int, prefill_chunk: int, prefill_span: int = 0):
        """prefill_span: positions at which a prompt token's attention costs as much as its projections
        (prefill_cost.attention_span); 0: every prompt token costs the same."""
        if max_batch < 1 or prefill_chunk < 1 or prefill_span < 0:
            raise ValueError("max_batch and prefill_chunk must be at least 1, prefill_span at least 0")
        self.blocks = blocks
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.prefill_span = prefill_span
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order
        self.num_preemptions = 0

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
        completing: set[int] = set()  # blocks this step's chunks fill
        for seq in list(self.running):
            if seq.status is SeqStatus.RUNNING and not seq.is_prefilling \
                    and self.blocks.prefix_ready(seq, completing) and self._grow(step, seq):
                step.decodes.append(seq)
        budget = chunk_cost(0, self.prefill_chunk, self.prefill_span)
        for seq in self.running:
            if budget > 0 and seq.is_prefilling and self.blocks.prefix_ready(seq, completing):
                budget -= self._chunk(step, seq, budget, completing)
        # no admission in a step that had to preempt: the blocks just freed are the decoders' to grow into
        while budget > 0 and not step.preempted and self.waiting and len(self.running) < self.max_batch:
            seq = self.waiting[0]
            if not self.blocks.allocate(seq):
                break
            self.waiting.popleft()
            self._admit(step, seq)
            if seq.is_prefilling and self.blocks.prefix_ready(seq, completing):
                budget -= self._chunk(step, seq, budget, completing)
        step.sampled = [s for s in step.decodes if s.samples_at_decode] + [c.seq for c in step.prefills if c.samples]
        return step

    def _grow(self, step: ScheduledStep, seq: Sequence) -> bool:
        """A block for seq's next position, preempting the newest sequences until there is one; False if seq
        itself had to go."""
        while not self.blocks.ensure_block(seq):
            victim = self.running[-1]
            self._preempt(step, victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, step: ScheduledStep, seq: Sequence) -> None:
        self._release(seq)
        seq.num_computed = 0
        seq.status = SeqStatus.WAITING
        seq.preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        step.preempted.append(seq)

    def _release(self, seq: Sequence) -> None:
        self.running.remove(seq)
        orphans = set(self.blocks.free(seq))
        if orphans:
            for other in self.running:
                self.blocks.adopt(other, orphans)

    def _admit(self, step: ScheduledStep, seq: Sequence) -> None:
        seq.status = SeqStatus.RUNNING
        self.running.append(seq)
        if not seq.started:
            seq.started = True
            seq.reused_tokens = seq.num_computed
            step.admitted.append(seq)

    def _chunk(self, step: ScheduledStep, seq: Sequence, budget: float, completing: set[int]) -> float:
        """Add seq's next prompt chunk, as long as `budget` allows (at least one token, unless the step has
        prefill already); returns what it cost."""
        start = seq.num_computed
        length = chunk_length(start, len(seq.prompt_ids) - start, budget, self.prefill_span)
        cost = chunk_cost(start, length, self.prefill_span)
        if cost > budget and step.prefills:
            return budget  # nothing more fits this step
        step.prefills.append(PrefillChunk(seq, start, length))
        completing.update(seq.blocks[start // BLOCK_SIZE:(start + length) // BLOCK_SIZE])
        return cost

    def advance(self, step: ScheduledStep) -> None:
        """After the forward: the step's tokens are now in the cache."""
        for seq in step.decodes:
            seq.num_computed += 1
            self.blocks.computed(seq, seq.num_computed - 1, seq.num_computed)
        for chunk in step.prefills:
            chunk.seq.num_computed += chunk.length
            self.blocks.computed(chunk.seq, chunk.start, chunk.start + chunk.length)

    def finish(self, seq: Sequence, keep_cache: bool = True) -> None:
        """Take a sequence out (finished, canceled or failed). Its whole computed blocks stay cached for reuse;
        blocks of a failed step are not marked computed, so they never are (keep_cache is kept for callers)."""
        if seq.status is SeqStatus.RUNNING:
            self._release(seq)
        elif seq.status is SeqStatus.WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        seq.status = SeqStatus.FINISHED
