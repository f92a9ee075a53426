"""The generation engine: one thread owns the model and runs an iteration-level (continuous)
batching loop over every live request, infer and stream alike.

Each step either decodes every running sequence and prefills prompt pieces in one forward pass
(mixed steps, for models that pass a load-time check) or alternates prefill and decode steps
(:mod:`.steps`). Finished and cancelled sequences leave the batch after the step that finished
them, so a new request never waits for a whole batch to drain. Models whose cache cannot be
merged (sliding-window or recurrent layers) fall back to static batches: new requests join when
the running batch is empty. Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable

import torch
from prometheus_client import CollectorRegistry
from ragraph_client.errors import RagraphError, ResourceExhausted, Unavailable
from ragraph_serving.batcher import GATHER_FACTOR

from . import ragged
from .kvcache import RunningBatch
from .metrics import EngineMetrics
from .model import LanguageModel
from .sampling import SamplingParams, choose, make_generator
from .sequence import Event, Sequence, deliver
from .slotcache import SlotCache
from .steps import AlternatingSteps, MixedSteps
from .textstream import TextStream

log = logging.getLogger("ragraph.llm.engine")


class Engine(MixedSteps, AlternatingSteps):
    """Owns the model; ``generate`` is the asyncio face, the loop runs in its own thread.

    The engine thread also loads the model (``load``) and is the only thread that runs torch
    compute. torch's OpenMP runtime (GNU libgomp) gives every thread that runs a parallel region a
    team of worker threads; once more of them exist than cores, idle workers stop spin-waiting
    and each of a step's ~200 small parallel regions pays a wake-up. Measured with the bench
    model: a one-row step took 9.5 ms on an engine thread after the model had run on another
    thread, 6.2 ms when the engine thread was the only one."""

    def __init__(
        self,
        load: Callable[[], LanguageModel],
        max_batch_size: int,
        max_queued: int,
        max_batch_time_ms: float,
        metrics: EngineMetrics | None = None,
        max_prefill_tokens: int = 128,
        mixed_steps: bool = True,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_queued = max_queued
        self.max_batch_time = max_batch_time_ms / 1000.0
        self.max_prefill_tokens = max_prefill_tokens
        self.metrics = metrics or EngineMetrics(CollectorRegistry())  # unexported when none is given
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []
        self._batch: RunningBatch | None = None
        self._mergeable: bool | None = None
        self._lock = threading.Condition()
        self._closed = False
        self._ids = itertools.count(1)
        self._outbox: list[tuple[Sequence, Event]] = []  # events of the current step, engine thread only
        if sys.getswitchinterval() > 0.001:
            # The engine thread and the server's event loop share the GIL; at the default 5 ms
            # switch interval each waits up to 5 ms for the other (measured: TTFT and ITL).
            sys.setswitchinterval(0.001)
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self._start(load, mixed_steps)
            except BaseException as exc:  # noqa: BLE001 - handed to the constructor's caller
                failure.append(exc)
                return
            finally:
                started.set()
            self._loop()

        self._thread = threading.Thread(target=run, name="ragraph-llm-engine", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]

    def _start(self, load: Callable[[], LanguageModel], mixed_steps: bool) -> None:
        self.lm = lm = load()
        with torch.inference_mode():
            vocab = int(lm.model.config.get_text_config().vocab_size)
            self.mixed = mixed_steps and ragged.supports_mixed_steps(lm.model, vocab)
        ragged.switch(lm.model, self.mixed)
        self._mergeable = self.mixed or None
        self._slots = SlotCache(self.max_batch_size, lm.device)

    # -- asyncio side -------------------------------------------------------------------------

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[Event]:
        """Events of one sequence; closing the iterator early (client gone, deadline) cancels it
        and frees its slot within one step."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        seq = Sequence(
            prompt_ids,
            params,
            TextStream(self.lm.tokenizer, params.stop),
            loop=loop,
            put=queue.put_nowait,
            generator=make_generator(params, self.lm.device),
        )
        self.submit(seq)
        finished = False
        try:
            while True:
                event = await queue.get()
                while event.finish_reason is None and event.error is None and not queue.empty():
                    # A consumer that fell behind gets the deltas so far in one event: fewer
                    # messages under load, no added latency when it keeps up.
                    following = queue.get_nowait()
                    following.text = event.text + following.text
                    event = following
                if event.error is not None:
                    finished = True
                    raise event.error
                if event.finish_reason is not None:
                    finished = True
                yield event
                if finished:
                    return
        finally:
            if not finished:
                self.cancel(seq)

    def submit(self, seq: Sequence) -> None:
        with self._lock:
            if self._closed:
                raise Unavailable("the LLM engine is shutting down")
            if len(self._waiting) >= self.max_queued:
                self.metrics.rejected.inc()
                raise ResourceExhausted(
                    f"the LLM queue is full ({len(self._waiting)} requests waiting, max_queued={self.max_queued}, "
                    f"{len(self._running)} running); retry later"
                )
            seq.id = next(self._ids)
            self._waiting.append(seq)
            self._gauges()
            self._lock.notify()

    def cancel(self, seq: Sequence) -> None:
        with self._lock:
            seq.cancelled = True
            if seq in self._waiting:
                self._waiting.remove(seq)
                self._count_finish(seq, "cancelled")
                self._gauges()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=10)

    # -- engine thread ------------------------------------------------------------------------

    def _gauges(self) -> None:
        self.metrics.queue_depth.set(len(self._waiting))
        self.metrics.running.set(len(self._running))

    def _count_finish(self, seq: Sequence, reason: str) -> None:
        seq.finish_reason = reason
        self.metrics.finished.labels(reason=reason).inc()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._waiting and not self._running:
                    self._lock.wait()
                if self._closed:
                    break
                idle = not self._running
            if idle and self.max_batch_time > 0:
                self._gather()
            try:
                with torch.inference_mode():
                    self._step()
            except Exception as exc:  # a model failure fails the batch, never the server
                log.exception("engine step failed; failing %d running sequences", len(self._running))
                error = exc if isinstance(exc, RagraphError) else Unavailable(f"LLM engine step failed: {exc}")
                for seq in self._running:
                    self._post(seq, Event("", error=error))
                self._flush()
                with self._lock:
                    self._running, self._batch = [], None
                    self._slots = SlotCache(self.max_batch_size, self.lm.device)
                    self._gauges()
        with self._lock:
            pending = list(self._waiting) + self._running
            self._waiting.clear()
        for seq in pending:
            self._post(seq, Event("", error=Unavailable("the LLM engine shut down before this request finished")))
        self._flush()

    def _post(self, seq: Sequence, event: Event) -> None:
        self._outbox.append((seq, event))

    def _flush(self) -> None:
        """Hand a step's events to their consumers' event loops: one wake-up per loop and step
        instead of one per event (each costs a syscall in this thread and a wake-up there)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Callable[[Event], object], Event]]] = {}
        for seq, event in self._outbox:
            by_loop.setdefault(seq.loop, []).append((seq.put, event))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(deliver, items)
            except RuntimeError:  # that loop is closed: nobody is left to read these events
                pass

    def _gather(self) -> None:
        """An idle engine waits while requests keep arriving (each within max_batch_time of the
        last, at most GATHER_FACTOR x max_batch_time in all), so a burst shares one prefill."""
        deadline = time.monotonic() + GATHER_FACTOR * self.max_batch_time
        seen = -1
        while time.monotonic() < deadline:
            with self._lock:
                waiting = len(self._waiting)
            if waiting == seen or waiting >= self.max_batch_size:
                return
            seen = waiting
            time.sleep(self.max_batch_time)

    def _step(self) -> None:
        if self.mixed:
            self._mixed_step(self._pieces())
        else:
            new = self._admit()
            if new:
                self._prefill(new)
            elif self._running:
                self._decode()
        self._reap()
        self._flush()

    def _emit(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        greedy = logits.argmax(dim=-1).tolist()
        now = time.monotonic()
        for row, seq in enumerate(seqs):
            if seq.cancelled:
                continue
            try:
                plain = seq.params.greedy and not seq.params.penalized
                token = greedy[row] if plain else choose(logits[row], seq.params, seq.generator, seq.tokens)
            except Exception as exc:  # one row's sampling bug fails that request only
                log.exception("sampling failed for sequence %d", seq.id)
                self._count_finish(seq, "error")
                self._post(seq, Event("", error=exc))
                continue
            seq.tokens.append(token)
            if seq.first_token_at == 0.0:
                seq.first_token_at = now
                self.metrics.ttft.observe(now - seq.submitted)
            else:
                self.metrics.inter_token.observe(now - seq.last_token_at)
            seq.last_token_at = now
            self.metrics.tokens.inc()
            if token in self.lm.eos_ids:
                self._finish(seq, "stop", "")
                continue
            delta = seq.stream.push(token)
            if seq.stream.stopped:
                self._finish(seq, "stop", delta)
            elif len(seq.tokens) >= seq.params.max_tokens:
                self._finish(seq, "length", delta)
            elif delta:
                self._post(seq, Event(delta))

    def _finish(self, seq: Sequence, reason: str, text: str) -> None:
        if not seq.stream.stopped:  # EOS or length: flush text held back for a possible stop string
            text += seq.stream.finish()
        self._count_finish(seq, reason)
        self._post(
            seq,
            Event(
                text,
                reason,
                len(seq.prompt_ids),
                len(seq.tokens),
                (seq.first_token_at - seq.submitted) * 1000.0,
            ),
        )

    def _reap(self) -> None:
        keep = [i for i, s in enumerate(self._running) if s.finish_reason is None and not s.cancelled]
        if len(keep) == len(self._running):
            return
        with self._lock:
            for seq in self._running:
                if seq.cancelled and seq.finish_reason is None:
                    self._count_finish(seq, "cancelled")
                if self.mixed and seq.finish_reason is not None:
                    self._slots.release(seq.slot)  # a free slot: nothing is copied
            self._running = [self._running[i] for i in keep]
            if not self.mixed:
                if not keep:
                    self._batch = None
                elif self._batch is not None:
                    self._batch.select(keep, trim=bool(self._mergeable))
            self._gauges()
