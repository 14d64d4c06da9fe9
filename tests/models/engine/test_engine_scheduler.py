"""The scheduler and block manager on their own: admission, waiting, chunked prefill, blocks, prefix reuse,
preemption. No torch."""
from __future__ import annotations

import subprocess
import sys

from models.batch import BLOCK_SIZE
from models.engine.block_manager import BlockManager
from models.engine.scheduler import Scheduler
from models.engine.sequence import SeqStatus, Sequence
from models.engine.types import GenerationRequest
from models.params import GenerationParams


def _seq(name: str, prompt_len: int, first: int = 1000, priority: int = 0) -> Sequence:
    """A sequence whose prompt is first, first+1, ... (distinct first values share no prefix)."""
    req = GenerationRequest(name, GenerationParams(max_new_tokens=8), prompt="x", priority=priority)
    return Sequence(req, list(range(first, first + prompt_len)))


def _blocks(n_blocks: int, prefix_cache: bool = True) -> BlockManager:
    return BlockManager(n_blocks, prefix_cache=prefix_cache)


def _run_step(sched: Scheduler) -> list:
    """Schedule, pretend the forward ran, and give every sampled sequence one token."""
    step = sched.schedule()
    sched.advance(step)
    for seq in step.sampled:
        seq.output_ids.append(7)
    return step


def test_scheduler_and_blocks_import_no_torch():
    code = ("import sys, models.engine.scheduler, models.engine.block_manager, models.engine.block_pool,"
            " models.engine.sequence;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_short_prompts_are_admitted_and_prefilled_in_one_step():
    sched = Scheduler(BlockManager(5, prefix_cache=False), max_batch=4, prefill_chunk=64)
    a, b = _seq("a", 10), _seq("b", 20, first=2000)
    sched.add(a), sched.add(b)
    step = sched.schedule()
    assert [(c.seq, c.start, c.length) for c in step.prefills] == [(a, 0, 10), (b, 0, 20)]
    assert step.admitted == [a, b] and step.sampled == [a, b]
    assert a.status is SeqStatus.RUNNING and set(a.blocks).isdisjoint(b.blocks)


def test_decoding_sequences_get_one_token_each_step():
    sched = Scheduler(BlockManager(5, prefix_cache=False), max_batch=4, prefill_chunk=64)
    a = _seq("a", 5)
    sched.add(a)
    _run_step(sched)
    step = sched.schedule()
    assert step.decodes == [a] and step.prefills == [] and step.num_tokens == 1
    assert a.num_computed == 5 and a.last_token() == 7


def test_long_prompt_is_chunked_and_interleaved_with_decoding():
    sched = Scheduler(BlockManager(5, prefix_cache=False), max_batch=4, prefill_chunk=16)
    short = _seq("short", 4)
    sched.add(short)
    _run_step(sched)
    long = _seq("long", 40, first=5000)
    sched.add(long)
    chunks = []
    for _ in range(3):
        step = _run_step(sched)
        assert step.decodes == [short]  # decoding never stalls behind the long prompt
        chunks += [(c.start, c.length, c.completes_prompt) for c in step.prefills]
    assert chunks == [(0, 16, False), (16, 16, False), (32, 8, True)]
    assert long.output_ids == [7] and not long.is_prefilling


def test_prefill_budget_is_shared_in_arrival_order():
    sched = Scheduler(BlockManager(5, prefix_cache=False), max_batch=4, prefill_chunk=16)
    a, b = _seq("a", 10), _seq("b", 10, first=2000)
    sched.add(a), sched.add(b)
    step = sched.schedule()
    assert [(c.seq.request_id, c.length) for c in step.prefills] == [("a", 10), ("b", 6)]
    sched.advance(step)
    step = sched.schedule()
    assert [(c.seq.request_id, c.start, c.length) for c in step.prefills] == [("b", 6, 4)]


def test_waiting_requests_are_admitted_by_priority_then_arrival():
    sched = Scheduler(BlockManager(2, prefix_cache=False), max_batch=1, prefill_chunk=64)
    running = _seq("running", 3)
    sched.add(running)
    _run_step(sched)
    low1, high1, mid, high2, low2 = (_seq(n, 3, first=1000 * (i + 2), priority=p) for i, (n, p) in
                                     enumerate([("low1", 0), ("high1", 9), ("mid", 5), ("high2", 9), ("low2", 0)]))
    for s in (low1, high1, mid, high2, low2):
        sched.add(s)
    assert [s.request_id for s in sched.waiting] == ["high1", "high2", "mid", "low1", "low2"]
    sched.finish(running)
    assert sched.schedule().admitted == [high1]


def test_request_waits_without_a_free_block_and_joins_when_one_is_released():
    sched = Scheduler(BlockManager(3, prefix_cache=False), max_batch=8, prefill_chunk=64)
    a, b, c = _seq("a", 3), _seq("b", 3, first=2000), _seq("c", 3, first=3000)
    for s in (a, b, c):
        sched.add(s)
    _run_step(sched)
    assert c.status is SeqStatus.WAITING and list(sched.waiting) == [c]
    sched.finish(a)
    step = sched.schedule()
    assert step.admitted == [c] and step.decodes == [b]


def test_max_batch_limits_running_sequences():
    sched = Scheduler(BlockManager(9, prefix_cache=False), max_batch=2, prefill_chunk=64)
    seqs = [_seq(str(i), 3, first=1000 * i) for i in range(3)]
    for s in seqs:
        sched.add(s)
    step = sched.schedule()
    assert step.admitted == seqs[:2]


def test_waiting_head_is_not_overtaken():
    sched = Scheduler(BlockManager(2, prefix_cache=False), max_batch=4, prefill_chunk=64)
    a, b, c = _seq("a", 3), _seq("b", 3, first=2000), _seq("c", 3, first=3000)
    for s in (a, b, c):
        sched.add(s)
    _run_step(sched)
    sched.finish(a)
    assert sched.schedule().admitted == [b]


def test_finishing_a_waiting_sequence_removes_it():
    sched = Scheduler(BlockManager(2, prefix_cache=False), max_batch=4, prefill_chunk=64)
    a = _seq("a", 3)
    sched.add(a)
    sched.finish(a)
    assert not sched.has_work() and a.status is SeqStatus.FINISHED


def test_a_sequence_takes_a_block_each_time_it_decodes_past_its_last():
    sched = Scheduler(_blocks(8, prefix_cache=False), max_batch=4, prefill_chunk=256)
    a = _seq("a", BLOCK_SIZE - 1)
    sched.add(a)
    _run_step(sched)
    assert len(a.blocks) == 1
    _run_step(sched)  # position 63: the first block's last
    assert len(a.blocks) == 1
    _run_step(sched)  # position 64: a new block
    assert len(a.blocks) == 2 and sched.blocks.pool.num_used == 2
    sched.finish(a)
    assert sched.blocks.pool.num_used == 0


def test_a_prompt_sharing_whole_blocks_with_a_running_sequence_shares_them():
    sched = Scheduler(_blocks(16), max_batch=4, prefill_chunk=512)
    a = _seq("a", 2 * BLOCK_SIZE + 10)
    sched.add(a)
    _run_step(sched)
    b = Sequence(GenerationRequest("b", GenerationParams(), prompt="x"), a.prompt_ids[:2 * BLOCK_SIZE + 3] + [1, 2])
    sched.add(b)
    step = sched.schedule()
    assert b.blocks[:2] == a.blocks[:2] and b.blocks[2] != a.blocks[2]
    assert [(c.seq, c.start) for c in step.prefills] == [(b, 2 * BLOCK_SIZE)] and b.reused_tokens == 2 * BLOCK_SIZE


def test_requests_admitted_in_one_step_share_a_prefix_computed_once():
    """b is admitted in the step that admits a: it shares a's named blocks, and its chunk waits until a's
    chunks have filled them (here two steps later, the budget being one block a step)."""
    shared = list(range(5000, 5000 + 2 * BLOCK_SIZE))
    a = Sequence(GenerationRequest("a", GenerationParams(), prompt="x"), shared + [1])
    b = Sequence(GenerationRequest("b", GenerationParams(), prompt="x"), shared + [2, 3])
    sched = Scheduler(_blocks(16), max_batch=4, prefill_chunk=BLOCK_SIZE)
    sched.add(a), sched.add(b)
    computed_by: list[tuple[str, int, int]] = []
    for _ in range(4):
        step = _run_step(sched)
        computed_by += [(c.seq.request_id, c.start, c.length) for c in step.prefills]
    assert b.blocks[:2] == a.blocks[:2]
    assert computed_by == [("a", 0, 64), ("a", 64, 64), ("a", 128, 1), ("b", 128, 2)]
    assert sched.blocks.reused_tokens == 2 * BLOCK_SIZE


def test_a_sharer_computes_the_shared_blocks_itself_when_their_writer_leaves_first():
    shared = list(range(5000, 5000 + 2 * BLOCK_SIZE))
    a = Sequence(GenerationRequest("a", GenerationParams(), prompt="x"), shared + [1])
    b = Sequence(GenerationRequest("b", GenerationParams(), prompt="x"), shared + [2, 3])
    sched = Scheduler(_blocks(16), max_batch=4, prefill_chunk=BLOCK_SIZE)
    sched.add(a), sched.add(b)
    _run_step(sched)  # a fills its first block; b waits for the second
    sched.finish(a)  # canceled before it computed the second
    step = _run_step(sched)
    assert [(c.seq, c.start) for c in step.prefills] == [(b, BLOCK_SIZE)]
    _run_step(sched)
    assert b.num_computed == len(b.prompt_ids) and b.output_ids == [7]


def test_a_finished_sequence_s_whole_blocks_serve_a_later_prompt():
    sched = Scheduler(_blocks(16), max_batch=4, prefill_chunk=512)
    a = _seq("a", BLOCK_SIZE + 5)
    sched.add(a)
    _run_step(sched)
    first = a.blocks[0]
    sched.finish(a)
    b = Sequence(GenerationRequest("b", GenerationParams(), prompt="x"), a.prompt_ids[:BLOCK_SIZE] + [9])
    sched.add(b)
    sched.schedule()
    assert b.blocks[0] == first and b.num_computed == BLOCK_SIZE


def test_generated_tokens_blocks_never_serve_a_prompt_of_the_same_tokens():
    """Keys computed by decode steps are not the bits prefill would give: a prompt never takes them."""
    sched = Scheduler(_blocks(16), max_batch=4, prefill_chunk=512)
    a = _seq("a", 10)
    sched.add(a)
    for _ in range(BLOCK_SIZE + 1):
        _run_step(sched)
    assert a.num_computed > BLOCK_SIZE
    b = Sequence(GenerationRequest("b", GenerationParams(), prompt="x"), a.token_ids(BLOCK_SIZE) + [9])
    sched.add(b)
    sched.schedule()
    assert b.num_computed == 0 and b.blocks[0] != a.blocks[0]


def test_when_the_pool_runs_out_the_newest_sequence_is_preempted_and_recomputed_later():
    # 4 usable blocks: a and b each hold 2 (prompt 100), and a's decoding past position 127 needs a fifth
    sched = Scheduler(_blocks(5, prefix_cache=False), max_batch=4, prefill_chunk=512)
    a, b = _seq("a", 100), _seq("b", 100, first=3000)
    sched.add(a), sched.add(b)
    preempted = []
    for _ in range(30):
        step = _run_step(sched)
        preempted += step.preempted
    assert preempted == [b] and b.status is SeqStatus.WAITING and sched.waiting[0] is b and not b.blocks
    assert b.num_computed == 0 and len(b.output_ids) > 1 and sched.num_preemptions == 1
    sched.finish(a)
    outputs = list(b.output_ids)
    step = _run_step(sched)
    assert [(c.seq, c.start, c.length) for c in step.prefills] == [(b, 0, 100)] and step.sampled == []
    # then its generated tokens again, one decode step each, sampling nothing until the last one
    for i in range(len(outputs) - 1):
        step = sched.schedule()
        assert step.decodes == [b] and step.sampled == [] and b.token_at(b.num_computed) == outputs[i]
        sched.advance(step)
    step = sched.schedule()
    assert step.sampled == [b] and b.output_ids == outputs


def test_a_sequence_back_from_preemption_takes_its_own_cached_blocks_generated_ones_included():
    sched = Scheduler(_blocks(6), max_batch=4, prefill_chunk=512)
    a, b = _seq("a", 100), _seq("b", 60, first=3000)
    sched.add(a), sched.add(b)
    while not sched.num_preemptions:
        held = list(b.blocks)
        _run_step(sched)
    assert sched.waiting[0] is b and len(held) >= 2  # its prompt's block, and one of generated tokens only
    sched.finish(a)
    step = sched.schedule()
    whole = (b.num_tokens - 1) // BLOCK_SIZE
    assert b.blocks[:whole] == held[:whole] and b.num_computed == whole * BLOCK_SIZE and not b.is_prefilling
    assert step.prefills == [] and step.decodes == []  # it decodes again from the next step


def test_blocks_released_are_taken_again_before_any_never_written_one():
    """On the CPU a block takes memory when first written: a pool that reuses released blocks (cached ones
    included) before fresh ones holds the most blocks the work held at once, not every block it ever cached."""
    sched = Scheduler(_blocks(64), max_batch=4, prefill_chunk=512)
    a = _seq("a", 3 * BLOCK_SIZE + 5)
    sched.add(a)
    _run_step(sched)
    held = set(a.blocks)
    sched.finish(a)  # its 3 whole blocks stay cached, its last one is spare
    b = _seq("b", 3 * BLOCK_SIZE + 5, first=9000)  # shares nothing with a
    sched.add(b)
    _run_step(sched)
    assert set(b.blocks) == held and b.num_computed == len(b.prompt_ids)
    assert sched.blocks.pool.num_written == len(held)


def test_a_finished_sequence_s_first_blocks_are_the_last_of_its_blocks_overwritten():
    """Its blocks are released last first, so a later prompt with its prefix (a shared system prompt) still
    finds the prefix after other work has taken some of them."""
    sched = Scheduler(_blocks(64), max_batch=4, prefill_chunk=512)
    a = _seq("a", 3 * BLOCK_SIZE + 5)
    sched.add(a)
    _run_step(sched)
    prefix = a.blocks[:2]
    sched.finish(a)
    b = _seq("b", BLOCK_SIZE + 5, first=9000)  # takes a's spare last block and one cached block
    sched.add(b)
    _run_step(sched)
    c = Sequence(GenerationRequest("c", GenerationParams(), prompt="x"), a.prompt_ids[:2 * BLOCK_SIZE] + [9])
    sched.add(c)
    sched.schedule()
    assert c.blocks[:2] == prefix and c.num_computed == 2 * BLOCK_SIZE


def test_with_a_span_a_long_prompt_s_later_chunks_are_shorter_and_each_step_costs_the_same():
    """prefill_span 64: a chunk of 16 at position 0 is the budget; later chunks take fewer tokens, each costing
    no more than it (models/engine/prefill_cost.py), and the prompt is still computed whole, in order."""
    from models.engine.prefill_cost import chunk_cost

    sched = Scheduler(BlockManager(9, prefix_cache=False), max_batch=4, prefill_chunk=16, prefill_span=64)
    long = _seq("long", 120)
    sched.add(long)
    chunks = []
    while long.is_prefilling:
        chunks += [(c.start, c.length) for c in _run_step(sched).prefills]
    assert chunks[0] == (0, 16)
    lengths = [n for _, n in chunks]
    assert lengths == sorted(lengths, reverse=True) and lengths[-2] < 16  # shorter as the context grows
    assert [s for s, _ in chunks] == [sum(lengths[:i]) for i in range(len(lengths))] and sum(lengths) == 120
    budget = chunk_cost(0, 16, 64)
    assert all(chunk_cost(s, n, 64) <= budget + 1e-9 for s, n in chunks)


def test_with_a_span_what_a_prompt_s_last_chunk_leaves_of_the_budget_goes_to_the_next_prompt():
    sched = Scheduler(BlockManager(9, prefix_cache=False), max_batch=4, prefill_chunk=16, prefill_span=64)
    long, short = _seq("long", 20), _seq("short", 3, first=3000)
    sched.add(long)
    assert [(c.start, c.length) for c in _run_step(sched).prefills] == [(0, 16)]  # the whole budget: 18
    sched.add(short)
    step = sched.schedule()  # long's last 4 cost 4 x (1 + 18/64) = 5.1; short's 3 then fit in what is left
    assert [(c.seq.request_id, c.start, c.length) for c in step.prefills] == [("long", 16, 4), ("short", 0, 3)]
    crowded = Scheduler(BlockManager(9, prefix_cache=False), max_batch=4, prefill_chunk=16, prefill_span=64)
    long = _seq("long", 100)
    crowded.add(long)
    for _ in range(3):
        _run_step(crowded)  # chunks of 16, 13 and 11 tokens: each costs most of the budget
    crowded.add(_seq("short", 3, first=3000))
    step = crowded.schedule()  # long's next 10 cost 17.0 of 18: short's 3 (3.1) wait, admitted, for a later step
    assert [(c.seq.request_id, c.start, c.length) for c in step.prefills] == [("long", 40, 10)]
    assert [s.request_id for s in crowded.running] == ["long", "short"]
