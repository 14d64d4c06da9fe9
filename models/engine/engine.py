"""The engine: one background thread that runs every submitted request in one continuous batch.

The step loop: schedule (which tokens), run (one forward), sample (one token per finished row), collect
(append, detokenize, check stops, emit events, retire finished sequences). Requests join and leave
between two steps. The thread sleeps on a condition when there is nothing to do.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch

from models.batch import BLOCK_SIZE, KVCache, blocks_for
from models.dtypes import CHOICES as DTYPE_CHOICES, DTYPES, resolve_dtype
from models.echo import clip
from models.engine.admission import check_request, encode_request
from models.engine.block_manager import BlockManager
from models.engine.memory import default_kv_budget, release_freed_heap
from models.engine.model_runner import ModelRunner
from models.engine.prefill_cost import attention_span
from models.engine.sampling import Sampler, TokenLogprob
from models.engine.scheduler import ScheduledStep, Scheduler
from models.engine.sequence import Detokenizer, SeqStatus, Sequence
from models.engine.types import (
    EngineError,
    EngineEvent,
    EngineStopped,
    EventListener,
    GenerationRequest,
    GenerationResult,
)
from models.params import ModelLimits

log = logging.getLogger(__name__)


KV_QUANTIZATIONS = ("auto", "int8", "none")


class EngineConfigError(ValueError):
    """An engine setting is invalid."""


@dataclass
class EngineConfig:
    """How the engine uses its machine.

    max_batch: most sequences running together. kv_budget_bytes: memory for the KV cache's pool of blocks
    (BLOCK_SIZE positions each); the pool holds min(kv_budget_bytes // one block, what max_batch sequences of
    max_len can use) blocks, and at least one sequence of max_len. None: half the memory available on the
    device once the weights are loaded (models/engine/memory.py).
    max_len: most positions (prompt + generated) of one sequence; None (the default): the model's context.
    prefill_chunk: most prompt tokens computed in one step (decode tokens come on top), at a context's start;
    later in a long prompt, what as many cost (models/engine/prefill_cost.py). prefill_span: the positions at
    which a token's attention costs as much as its projections; 0 (the default): every prompt token costs the
    same; None: from the model's shape (a long prompt's later chunks shorter: its neighbours' longest wait
    for a token halves, its own first token comes 20-35% later, measured in the README).
    prefix_cache_min: 0 turns the prefix cache off; any other value keeps it on (whole blocks of BLOCK_SIZE
    tokens are reused).
    dtype: float32 | bfloat16 | float16, or auto (models/dtypes.py), resolved when the config is made.
    kv_quantization: the KV cache's keys and values in 8 bits ("int8", models/kv_int8.py: half a bfloat16
    cache's memory), as the network holds them ("none"), or "auto": int8 where the network's C attention reads
    them (LlamaNetwork.cache_dtype_for).
    """

    max_batch: int = 64
    kv_budget_bytes: int | None = None
    max_len: int | None = None
    prefill_chunk: int = 512
    prefill_span: int | None = 0
    device: str = "cpu"
    dtype: str = "float32"
    prefix_cache_min: int = 16
    kv_quantization: str = "auto"

    def __post_init__(self) -> None:
        if self.kv_quantization not in KV_QUANTIZATIONS:
            raise EngineConfigError(f"kv_quantization must be one of {list(KV_QUANTIZATIONS)}, "
                                    f"got {self.kv_quantization!r}")
        for name in ("max_batch", "kv_budget_bytes", "max_len", "prefill_chunk"):
            value = getattr(self, name)
            if name in ("kv_budget_bytes", "max_len") and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EngineConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.prefill_span is not None and (isinstance(self.prefill_span, bool)
                                              or not isinstance(self.prefill_span, int) or self.prefill_span < 0):
            raise EngineConfigError(f"prefill_span must be a non-negative integer or None, got {self.prefill_span!r}")
        if isinstance(self.prefix_cache_min, bool) or not isinstance(self.prefix_cache_min, int) \
                or self.prefix_cache_min < 0:
            raise EngineConfigError(f"prefix_cache_min must be a non-negative integer, got {self.prefix_cache_min!r}")
        if isinstance(self.dtype, torch.dtype):
            self.dtype = str(self.dtype).removeprefix("torch.")
        if self.dtype not in DTYPE_CHOICES:
            raise EngineConfigError(f"dtype must be one of {list(DTYPE_CHOICES)}, got {self.dtype!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise EngineConfigError(f"device {self.device!r}: {e}") from None
        self.dtype = resolve_dtype(self.dtype, self.device)  # "auto" becomes what the device runs natively

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def _cache_dtype(network: Any, ec: EngineConfig) -> torch.dtype:
    """The KV cache's dtype: the network's choice under ec.kv_quantization where it makes one (LlamaNetwork);
    else its cache_dtype, or the compute dtype (a network that cannot read an 8-bit cache refuses "int8")."""
    choose = getattr(network, "cache_dtype_for", None)
    if choose is not None:
        return cast("torch.dtype", choose(ec.kv_quantization))
    if ec.kv_quantization == "int8":
        raise EngineConfigError(f"kv_quantization int8: {type(network).__name__} cannot read an 8-bit KV cache")
    return cast("torch.dtype", getattr(network, "cache_dtype", ec.torch_dtype))


class RequestHandle:
    """The submitter's view of one request: wait for its result, or cancel it."""

    def __init__(self, engine: Engine, seq: Sequence):
        self._engine = engine
        self._seq = seq
        self._done = threading.Event()
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None

    @property
    def request_id(self) -> str:
        return self._seq.request_id

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> GenerationResult:
        """The result; raises TimeoutError if not done within timeout, or the EngineError that failed it."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.request_id} not done after {timeout} s")
        if self._result is None:
            raise self._error or EngineError(f"request {self.request_id} ended without a result")
        return self._result

    def cancel(self) -> None:
        """Stop the request: a running one leaves the batch before the next step, keeping its text so far."""
        self._engine._cancel(self._seq)

    def _resolve(self, result: GenerationResult | None, error: BaseException | None = None) -> None:
        self._result, self._error = result, error
        self._done.set()


class Engine:
    """Continuous batching over one network. Thread-safe `submit`; the loop runs on one thread of its own."""

    def __init__(self, network: Any, config: Any, tokenizer: Any, chat_template: Any = None,
                 engine_config: EngineConfig | None = None, *,
                 detokenizer_factory: Callable[[Any, list[int]], Detokenizer] | None = None):
        """network: forward(plan, cache) -> logits; config: its ModelConfig; tokenizer: encode/decode and
        eos_token_ids; chat_template: renders `messages` (None: prompts only).
        detokenizer_factory(tokenizer, prompt_ids) makes one sequence's incremental detokenizer
        (default: models.detokenize.IncrementalDetokenizer)."""
        self._detokenizer_factory = detokenizer_factory
        ec = engine_config or EngineConfig()
        self.engine_config = ec
        self.config = config
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        own = int(config.max_position_embeddings)
        self.max_len = own if ec.max_len is None else min(own, ec.max_len)
        # what a request must stay within (checked at submit): the network's vocabulary, this engine's max_len
        self.limits = ModelLimits(vocab_size=int(config.vocab_size), context_length=self.max_len)
        self.cache_dtype = _cache_dtype(network, ec)
        per_block = KVCache.bytes_per_block(config.num_layers, config.num_kv_heads, config.head_dim, self.cache_dtype)
        budget = ec.kv_budget_bytes if ec.kv_budget_bytes is not None else default_kv_budget(ec.device)
        # block 0 is the null block; a pool holds at least one sequence of max_len, and no more blocks than a
        # full batch of them could use
        least, most = 1 + blocks_for(self.max_len), 1 + ec.max_batch * blocks_for(self.max_len)
        self.n_blocks = min(most, budget // per_block)
        if self.n_blocks < least:
            raise EngineConfigError(f"kv_budget_bytes {budget} is less than one sequence of {self.max_len} "
                                    f"positions ({least * per_block} bytes): lower max_len")
        log.info("KV cache: a pool of %d blocks of %d positions (%d positions), %s, %.0f MiB at most (budget "
                 "%.0f MiB%s)%s; max_len %d, prefix cache %s", self.n_blocks - 1, BLOCK_SIZE,
                 (self.n_blocks - 1) * BLOCK_SIZE, str(self.cache_dtype).removeprefix("torch."),
                 self.n_blocks * per_block / 2**20, budget / 2**20,
                 "" if ec.kv_budget_bytes is not None else ", half the memory available",
                 ", committed as blocks are first written" if torch.device(ec.device).type == "cpu" else "",
                 self.max_len, "on" if ec.prefix_cache_min else "off")
        self.eos_token_ids = tuple(tokenizer.eos_token_ids)
        self.runner = ModelRunner(network, config, self.n_blocks, self.max_len, ec.device, self.cache_dtype)
        self.sampler = Sampler(self.eos_token_ids)
        self.scheduler = self._new_scheduler()
        self._cond = threading.Condition()
        self._inbox: list[Sequence] = []
        self._cancels: list[Sequence] = []
        self._handles: dict[int, RequestHandle] = {}  # id(seq) -> handle, for sequences not yet finished
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps = 0
        self.step_tokens = 0
        # seconds spent in each phase of the step loop, for profiling reports
        self.timings = {"schedule": 0.0, "forward": 0.0, "sample": 0.0, "collect": 0.0}

    def _new_scheduler(self) -> Scheduler:
        ec = self.engine_config
        span = attention_span(self.config) if ec.prefill_span is None else ec.prefill_span
        return Scheduler(BlockManager(self.n_blocks, prefix_cache=ec.prefix_cache_min > 0), ec.max_batch,
                         ec.prefill_chunk, span)

    # ---- the submitter's side (any thread) ----

    def encode(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids: chat messages rendered with the model's template, or the raw prompt
        (models/prompting.py, which the API counts prompt tokens with too). Raises InvalidRequest."""
        return encode_request(self.tokenizer, self.chat_template, request)

    def submit(self, request: GenerationRequest, on_event: EventListener | None = None) -> RequestHandle:
        """Queue a request. Raises now, in the caller's thread, for anything that would fail in the batch:
        InvalidRequest (a parameter past the model's bounds, a prompt that cannot be encoded), PromptTooLong
        (prompt + max_new_tokens over max_len), or EngineStopped. A request admitted here can fail only alone."""
        prompt_ids = self.encode(request)
        check_request(request, prompt_ids, self.limits)
        seq = Sequence(request, prompt_ids, eos_token_ids=self.eos_token_ids,
                       detokenizer=self._detokenizer(prompt_ids), listener=on_event)
        if request.params.do_sample:
            seq.generator = self.runner.make_generator(request.params.seed)
        handle = RequestHandle(self, seq)
        with self._cond:
            if self._stopping:
                raise EngineStopped("the engine is stopped")
            self._handles[id(seq)] = handle
            self._inbox.append(seq)
            self._cond.notify()
        return handle

    def _detokenizer(self, prompt_ids: list[int]) -> Detokenizer:
        if self._detokenizer_factory is None:
            from models.detokenize import IncrementalDetokenizer

            self._detokenizer_factory = IncrementalDetokenizer
        return self._detokenizer_factory(self.tokenizer, prompt_ids)

    def _cancel(self, seq: Sequence) -> None:
        with self._cond:
            seq.canceled = True
            self._cancels.append(seq)
            self._cond.notify()

    def start(self) -> Engine:
        """Start the loop thread (once)."""
        with self._cond:
            if self._stopping:
                raise EngineStopped("the engine is stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="genq-engine", daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop after its current step; requests not finished fail with EngineStopped."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._fail_everything(EngineStopped("the engine was stopped"))

    def stats(self) -> dict[str, Any]:
        blocks = self.scheduler.blocks
        return {"dtype": self.engine_config.dtype, "max_batch": self.engine_config.max_batch,
                "n_blocks": self.n_blocks, "block_size": BLOCK_SIZE,
                "max_len": self.max_len, "steps": self.steps, "step_tokens": self.step_tokens,
                "phase_seconds": {k: round(v, 3) for k, v in self.timings.items()},
                "running": len(self.scheduler.running), "waiting": len(self.scheduler.waiting),
                "blocks_used": blocks.pool.num_used, "blocks_written": blocks.pool.num_written,
                "preemptions": self.scheduler.num_preemptions,
                "prefix_reused_tokens": blocks.reused_tokens}

    # ---- the engine thread ----

    def _loop(self) -> None:
        while True:
            with self._cond:
                idle = not self._has_work()
            if idle:  # the batch just emptied: hand its steps' freed temporaries back to the OS, once
                release_freed_heap()
            with self._cond:
                while not self._has_work():
                    self._cond.wait()
                if self._stopping:
                    break
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, []
            try:
                for seq in inbox:
                    self.scheduler.add(seq)
                for seq in cancels:
                    if seq.status is not SeqStatus.FINISHED:
                        self._isolated(seq, self._finish, seq, "canceled")
                self.step()
            except Exception as e:  # the engine's own bookkeeping broke: nothing can be trusted, fail every request
                log.exception("engine step failed")
                self._fail_everything(EngineError(clip(f"engine step failed: {type(e).__name__}: {e}")))
        self._fail_everything(EngineStopped("the engine was stopped"))

    def _has_work(self) -> bool:  # under self._cond
        return bool(self._stopping or self._inbox or self._cancels or self.scheduler.has_work())

    def step(self) -> None:
        """One iteration: schedule, run, sample, collect. Runs on the engine thread.

        A failure that belongs to one sequence (its sampling, stop checks, detokenizing, events) fails that
        sequence alone and the others go on. A failed forward fails the step's sequences (their slots may
        hold half-written keys), and the engine goes on with the rest.
        """
        t0 = time.perf_counter()
        step = self.scheduler.schedule()
        if not step:
            return
        for seq in step.admitted:
            self._emit(seq, EngineEvent("started", seq.request_id))
        t1 = time.perf_counter()
        try:
            logits = self.runner.run(step)
        except Exception as e:
            failed = self._in_step(step)
            log.exception("engine forward failed; failing the %d sequences of its step", len(failed))
            error = EngineError(clip(f"engine step failed: {type(e).__name__}: {e}"))
            for seq in failed:
                self._fail(seq, error, keep_cache=False)
            return
        self.scheduler.advance(step)
        self.steps += 1
        self.step_tokens += step.num_tokens
        t2 = time.perf_counter()
        rows = step.sampled
        sampled = self._sample(logits, rows) if rows else []
        t3 = time.perf_counter()
        self.timings["schedule"] += t1 - t0
        self.timings["forward"] += t2 - t1
        self.timings["sample"] += t3 - t2
        if not rows:  # only unfinished prompt chunks this step
            return
        for seq, choice in zip(rows, sampled, strict=True):
            if choice is None or seq.status is SeqStatus.FINISHED:
                continue
            self._isolated(seq, self._collect, seq, *choice)
        self.timings["collect"] += time.perf_counter() - t3

    def _in_step(self, step: ScheduledStep) -> list[Sequence]:
        """The sequences whose blocks a step writes: its decodes and prefills."""
        seqs = {id(s): s for s in [*step.decodes, *(c.seq for c in step.prefills)]}
        return [s for s in seqs.values() if s.status is not SeqStatus.FINISHED]

    def _sample(self, logits: torch.Tensor, rows: list[Sequence]) -> list[tuple[int, TokenLogprob | None] | None]:
        """One (token id, logprob) per row, all rows at once. If that raises, each row alone: a row that
        raises by itself fails its sequence (None in its place), and the others keep their tokens."""
        try:
            out = self.sampler.sample(logits, rows)
            return list(zip(out.token_ids, out.logprobs, strict=True))
        except Exception:
            log.warning("sampling a step of %d rows failed; sampling them one by one", len(rows), exc_info=True)
        choices: list[tuple[int, TokenLogprob | None] | None] = []
        for i, seq in enumerate(rows):
            try:
                one = self.sampler.sample(logits[i:i + 1], [seq])
                choices.append((one.token_ids[0], one.logprobs[0]))
            except Exception as e:
                log.exception("sampling request %s failed", seq.request_id)
                self._fail(seq, EngineError(clip(f"request failed: {type(e).__name__}: {e}")))
                choices.append(None)
        return choices

    def _isolated(self, seq: Sequence, work: Callable[..., None], *args: Any) -> None:
        """Run one sequence's own post-processing; if it raises, that sequence fails alone."""
        try:
            work(*args)
        except Exception as e:
            log.exception("request %s failed", seq.request_id)
            with self._cond:
                unresolved = id(seq) in self._handles
            if unresolved:  # (it may have failed after handing out its result: then it stays as it ended)
                self._fail(seq, EngineError(clip(f"request failed: {type(e).__name__}: {e}")))

    def _collect(self, seq: Sequence, token_id: int, lp: TokenLogprob | None) -> None:
        seq.output_ids.append(token_id)
        n = len(seq.output_ids)
        if lp is not None and seq.logprobs is not None:
            seq.logprobs.append(self._logprob_entry(token_id, lp))
        reason = seq.stop.check_token(token_id, n)
        delta = ""
        if reason is None:
            if seq.detokenizer is None:  # the engine gives every sequence one (_detokenizer)
                raise RuntimeError(f"{seq!r} has no detokenizer")
            delta, hit = seq.stop.push_text(seq.detokenizer.push(token_id), n)
            if hit:
                reason = "stop"
        if reason is None and n >= seq.params.max_new_tokens:
            reason = "length"
        if delta:
            self._emit(seq, EngineEvent("delta", seq.request_id, text=delta))
        if reason is not None:
            self._finish(seq, reason)

    def _logprob_entry(self, token_id: int, lp: TokenLogprob) -> dict[str, Any]:
        def text(t: int) -> str:
            return self.tokenizer.decode([t])

        return {"token": text(token_id), "token_id": token_id, "logprob": lp.logprob,
                "top": [{"token": text(t), "token_id": t, "logprob": v} for t, v in lp.top]}

    def _finish(self, seq: Sequence, reason: str) -> None:
        if reason != "stop" and seq.detokenizer is not None:
            # tokens the detokenizer holds (a character cut at the end) decode as they are
            flush = getattr(seq.detokenizer, "flush", None)
            tail = flush() if flush is not None else ""
            rest, hit = seq.stop.push_text(tail, len(seq.output_ids))
            if hit:
                reason = "stop"
            else:
                rest += seq.stop.flush()  # held back for a stop string that never came: output after all
            if rest:
                self._emit(seq, EngineEvent("delta", seq.request_id, text=rest))
        self.scheduler.finish(seq)
        seq.finish_reason = reason
        result = GenerationResult(text=seq.text, finish_reason=reason, prompt_tokens=len(seq.prompt_ids),
                                  completion_tokens=len(seq.output_ids), token_ids=list(seq.output_ids),
                                  logprobs=seq.logprobs)
        self._emit(seq, EngineEvent("finished", seq.request_id, result=result))
        self._resolve(seq, result, None)

    def _fail(self, seq: Sequence, error: BaseException, keep_cache: bool = True) -> None:
        self.scheduler.finish(seq, keep_cache=keep_cache)
        self._emit(seq, EngineEvent("finished", seq.request_id, error=str(error)))
        self._resolve(seq, None, error)

    def _fail_everything(self, error: BaseException) -> None:
        with self._cond:
            pending = list(self._inbox)
            self._inbox, self._cancels = [], []
        seqs = list(self.scheduler.running) + list(self.scheduler.waiting) + pending
        for seq in seqs:
            if seq.status is not SeqStatus.FINISHED:
                seq.status = SeqStatus.FINISHED
                self._emit(seq, EngineEvent("finished", seq.request_id, error=str(error)))
                self._resolve(seq, None, error)
        self.scheduler = self._new_scheduler()  # slots may hold half-written keys: forget them all

    def _resolve(self, seq: Sequence, result: GenerationResult | None, error: BaseException | None) -> None:
        with self._cond:
            handle = self._handles.pop(id(seq), None)
        if handle is not None:
            handle._resolve(result, error)

    @staticmethod
    def _emit(seq: Sequence, event: EngineEvent) -> None:
        if seq.listener is None:
            return
        try:
            seq.listener(event)
        except Exception:  # a broken listener loses its events; the request itself goes on
            log.exception("event listener of request %s failed; detached", seq.request_id)
            seq.listener = None
