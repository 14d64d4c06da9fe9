"""The scheduler and slot manager on their own: admission, waiting, chunked prefill, prefix reuse. No torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from models.engine.scheduler import Scheduler
from models.engine.sequence import SeqStatus, Sequence
from models.engine.slots import SlotManager, common_prefix_len
from models.engine.types import GenerationRequest
from models.params import GenerationParams


def _seq(name: str, prompt_len: int, first: int = 1000, priority: int = 0) -> Sequence:
    """A sequence whose prompt is first, first+1, ... (distinct first values share no prefix)."""
    req = GenerationRequest(name, GenerationParams(max_new_tokens=8), prompt="x", priority=priority)
    return Sequence(req, list(range(first, first + prompt_len)))


def _run_step(sched: Scheduler) -> list:
    """Schedule, pretend the forward ran, and give every sampled sequence one token."""
    step = sched.schedule()
    sched.advance(step)
    for seq in step.sampled:
        seq.output_ids.append(7)
    return step


def test_scheduler_and_slots_import_no_torch():
    code = ("import sys, models.engine.scheduler, models.engine.slots, models.engine.sequence;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_short_prompts_are_admitted_and_prefilled_in_one_step():
    sched = Scheduler(SlotManager(4, min_prefix=0), max_batch=4, prefill_chunk=64)
    a, b = _seq("a", 10), _seq("b", 20, first=2000)
    sched.add(a), sched.add(b)
    step = sched.schedule()
    assert [(c.seq, c.start, c.length) for c in step.prefills] == [(a, 0, 10), (b, 0, 20)]
    assert step.admitted == [a, b] and step.sampled == [a, b]
    assert a.status is SeqStatus.RUNNING and a.slot != b.slot


def test_decoding_sequences_get_one_token_each_step():
    sched = Scheduler(SlotManager(4, min_prefix=0), max_batch=4, prefill_chunk=64)
    a = _seq("a", 5)
    sched.add(a)
    _run_step(sched)
    step = sched.schedule()
    assert step.decodes == [a] and step.prefills == [] and step.num_tokens == 1
    assert a.num_computed == 5 and a.last_token() == 7


def test_long_prompt_is_chunked_and_interleaved_with_decoding():
    sched = Scheduler(SlotManager(4, min_prefix=0), max_batch=4, prefill_chunk=16)
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
    sched = Scheduler(SlotManager(4, min_prefix=0), max_batch=4, prefill_chunk=16)
    a, b = _seq("a", 10), _seq("b", 10, first=2000)
    sched.add(a), sched.add(b)
    step = sched.schedule()
    assert [(c.seq.request_id, c.length) for c in step.prefills] == [("a", 10), ("b", 6)]
    sched.advance(step)
    step = sched.schedule()
    assert [(c.seq.request_id, c.start, c.length) for c in step.prefills] == [("b", 6, 4)]


def test_waiting_requests_are_admitted_by_priority_then_arrival():
    sched = Scheduler(SlotManager(1, min_prefix=0), max_batch=1, prefill_chunk=64)
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


def test_request_waits_without_a_free_slot_and_joins_when_one_is_released():
    sched = Scheduler(SlotManager(2, min_prefix=0), max_batch=8, prefill_chunk=64)
    a, b, c = _seq("a", 3), _seq("b", 3, first=2000), _seq("c", 3, first=3000)
    for s in (a, b, c):
        sched.add(s)
    _run_step(sched)
    assert c.status is SeqStatus.WAITING and list(sched.waiting) == [c]
    sched.finish(a)
    step = sched.schedule()
    assert step.admitted == [c] and c.slot == a.slot and step.decodes == [b]


def test_max_batch_limits_running_sequences():
    sched = Scheduler(SlotManager(8, min_prefix=0), max_batch=2, prefill_chunk=64)
    seqs = [_seq(str(i), 3, first=1000 * i) for i in range(3)]
    for s in seqs:
        sched.add(s)
    step = sched.schedule()
    assert step.admitted == seqs[:2]


def test_waiting_head_is_not_overtaken():
    sched = Scheduler(SlotManager(1, min_prefix=0), max_batch=4, prefill_chunk=64)
    a, b, c = _seq("a", 3), _seq("b", 3, first=2000), _seq("c", 3, first=3000)
    for s in (a, b, c):
        sched.add(s)
    _run_step(sched)
    sched.finish(a)
    assert sched.schedule().admitted == [b]


def test_finishing_a_waiting_sequence_removes_it():
    sched = Scheduler(SlotManager(1, min_prefix=0), max_batch=4, prefill_chunk=64)
    a = _seq("a", 3)
    sched.add(a)
    sched.finish(a)
    assert not sched.has_work() and a.status is SeqStatus.FINISHED


def test_prompt_sharing_a_prefix_with_a_running_sequence_copies_it():
    sched = Scheduler(SlotManager(4, min_prefix=16), max_batch=4, prefill_chunk=256)
    a = _seq("a", 40)
    sched.add(a)
    _run_step(sched)
    b = Sequence(GenerationRequest("b", GenerationParams(), prompt="x"), list(range(1000, 1030)) + [1, 2, 3])
    sched.add(b)
    lender_slot = a.slot
    step = sched.schedule()
    assert step.copies[0] == (lender_slot, b.slot, 30)
    assert [(c.seq, c.start, c.length) for c in step.prefills] == [(b, 30, 3)]


def test_finished_sequence_slot_is_reused_in_place_for_a_matching_prompt():
    sched = Scheduler(SlotManager(4, min_prefix=16), max_batch=4, prefill_chunk=256)
    a = _seq("a", 40)
    sched.add(a)
    _run_step(sched)
    sched.finish(a)
    b = _seq("b", 40)  # the same prompt: everything but the last token is reused
    sched.add(b)
    step = sched.schedule()
    assert b.slot == a.slot and step.copies == []
    assert [(c.start, c.length) for c in step.prefills] == [(39, 1)]


def test_prefix_shorter_than_min_prefix_is_not_reused():
    sched = Scheduler(SlotManager(4, min_prefix=16), max_batch=4, prefill_chunk=256)
    a = _seq("a", 40)
    sched.add(a)
    _run_step(sched)
    b = Sequence(GenerationRequest("b", GenerationParams(), prompt="x"), list(range(1000, 1010)) + [1] * 20)
    sched.add(b)
    step = sched.schedule()
    assert all(dst != b.slot for _, dst, _ in step.copies) and b.num_computed == 0


def test_fresh_slots_are_preferred_over_cached_ones():
    slots = SlotManager(3, min_prefix=4)
    g1 = slots.acquire(list(range(10)))
    slots.release(g1.slot, list(range(10)))
    g2 = slots.acquire([50, 51, 52, 53, 54])
    assert g2.slot != g1.slot and g2.reused == 0


def test_release_of_a_free_slot_is_refused():
    slots = SlotManager(2)
    with pytest.raises(ValueError):
        slots.release(0)


@pytest.mark.parametrize("a,b,limit,want", [
    ([], [1], 5, 0), ([1, 2, 3], [1, 2, 4], 9, 2), (list(range(100)), list(range(100)), 70, 70),
    (list(range(100)), list(range(40)) + [0], 99, 40),
])
def test_common_prefix_len(a, b, limit, want):
    assert common_prefix_len(a, b, limit) == want


def _decoding(sched: Scheduler, n: int, prompt_len: int = 5) -> list[Sequence]:
    seqs = [_seq(f"s{i}", prompt_len, first=1000 * (i + 1)) for i in range(n)]
    for s in seqs:
        sched.add(s)
    _run_step(sched)
    return seqs


def test_decoding_sequences_are_compacted_into_the_lowest_slots_in_order():
    sched = Scheduler(SlotManager(6, min_prefix=0), max_batch=6, prefill_chunk=64)
    _decoding(sched, 4)
    step = sched.schedule()
    assert [s.slot for s in step.decodes] == [0, 1, 2, 3]
    sched.advance(step)
    for s in step.sampled:
        s.output_ids.append(7)
    sched.finish(step.decodes[1])  # a hole at slot 1
    moved = step.decodes[3]
    computed = moved.num_computed
    step = sched.schedule()
    assert [s.slot for s in step.decodes] == [0, 1, 2]
    assert (3, 1, computed) in step.copies and moved.slot == 1


def test_a_prompt_being_prefilled_is_moved_out_of_the_decode_range():
    sched = Scheduler(SlotManager(3, min_prefix=4), max_batch=3, prefill_chunk=64)
    a, b = _decoding(sched, 2, prompt_len=20)
    _run_step(sched)  # compacted: a, b in slots 0, 1
    assert (a.slot, b.slot) == (0, 1)
    sched.finish(a)
    # c continues a's conversation, so it claims a's slot 0 in place: a prompt being prefilled in the decode range
    c = Sequence(GenerationRequest("c", GenerationParams(), prompt="x"), a.token_ids(a.num_computed) + [5] * 30)
    sched.add(c)
    step = sched.schedule()
    assert step.copies == [(0, 2, 21), (1, 0, b.num_computed)]
    assert (b.slot, c.slot) == (0, 2) and c.num_computed == 21


def test_a_slot_vacated_by_a_move_lends_its_prefix():
    slots = SlotManager(4, min_prefix=4)
    sched = Scheduler(slots, max_batch=4, prefill_chunk=64)
    a, b = _decoding(sched, 2, prompt_len=20)
    sched.finish(a)
    step = sched.schedule()
    src = next(src for src, dst, _ in step.copies if dst == b.slot)
    grant = slots.acquire(b.token_ids(b.num_computed) + [1, 2])
    assert grant.slot == src and grant.reused == b.num_computed and grant.copy is None
