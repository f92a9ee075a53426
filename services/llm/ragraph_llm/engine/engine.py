"""The generation engine: one thread owns the model and runs an iteration-level (continuous)
batching loop over every live request, infer and stream alike.

Each step the engine's stepper (:mod:`.stepper`, chosen at load) plans what to prefill, runs one
forward pass and hands back logits; the emitter (:mod:`.emitter`) turns them into tokens, text and
events, which the outbox (:mod:`.outbox`) hands to the requests' event loops. Mixed steps decode every running
sequence and prefill prompt pieces in one forward pass (:mod:`.mixed`, for models that pass a
load-time check); other models alternate prefill and decode steps (:mod:`.alternating`).
Finished and cancelled sequences leave the batch after the step that finished them, so a new
request never waits for a whole batch to drain. Models whose cache cannot be merged
(sliding-window or recurrent layers) fall back to static batches: new requests join when the
running batch is empty. Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable

import torch
from prometheus_client import CollectorRegistry
from ragraph_client.errors import RagraphError, ResourceExhausted, Unavailable
from ragraph_serving.batcher import GATHER_FACTOR

from ..metrics import EngineMetrics
from ..model import LanguageModel
from . import ragged
from .alternating import AlternatingStepper
from .emitter import Emitter
from .mixed import MixedStepper
from .outbox import Outbox
from .sampling import SamplingParams, make_generator
from .sequence import Event, Sequence
from .stepper import Plan, Stepper
from .textstream import TextStream

log = logging.getLogger("ragraph.llm.engine")


def pick_stepper(
    lm: LanguageModel, mixed_steps: bool, max_batch_size: int, max_prefill_tokens: int, metrics: EngineMetrics
) -> Stepper:
    """Mixed steps when asked for and the model passes the load-time check, else alternating."""
    with torch.inference_mode():
        vocab = int(lm.model.config.get_text_config().vocab_size)
        mixed = mixed_steps and ragged.supports_mixed_steps(lm.model, vocab)
    ragged.switch(lm.model, mixed)
    kind = MixedStepper if mixed else AlternatingStepper
    return kind(lm, max_batch_size, max_prefill_tokens, metrics)


class Engine:
    """Owns the model; ``generate`` is the asyncio face, the loop runs in its own thread.

    The engine thread also loads the model (``load``) and is the only thread that runs torch
    compute. torch's OpenMP runtime (GNU libgomp) gives every thread that runs a parallel region a
    team of worker threads; once more of them exist than cores, idle workers stop spin-waiting
    and each of a step's ~200 small parallel regions pays a wake-up. Measured with the bench
    model: a one-row step took 9.5 ms on an engine thread after the model had run on another
    thread, 6.2 ms when the engine thread was the only one.

    The engine thread shares the GIL with the server's event loop, and the process keeps
    Python's switch interval (5 ms). A process-wide 1 ms was measured on this 2-core CPU
    (bench/llm.py, tiny and bench models, 1 and 16 streams, interleaved runs): no better TTFT or
    tok/s, a worse steady-state inter-token p50 at 16 streams on the tiny model (2.65 vs 2.10 ms),
    and more runs stalled by other processes' load (8 of 31 vs 1 of 29)."""

    lm: LanguageModel
    stepper: Stepper
    _emitter: Emitter

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
        self._lock = threading.Condition()
        self._closed = False
        self._ids = itertools.count(1)
        self._outbox = Outbox()  # events of the current step, engine thread only
        self._planned: list[Sequence] = []  # the current step's prompts (newcomers join running in it)
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self.lm = load()
                self.stepper = pick_stepper(
                    self.lm, mixed_steps, self.max_batch_size, self.max_prefill_tokens, self.metrics
                )
                self._emitter = Emitter(self.lm.eos_ids, self.metrics, self._outbox)
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

    @property
    def mixed(self) -> bool:
        """Whether the engine takes mixed steps (chosen at load)."""
        return self.stepper.name == "mixed"

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
                self._emitter.count_finish(seq, "cancelled")
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
                running = {id(seq) for seq in self._running}
                failed = self._running + [seq for seq in self._planned if id(seq) not in running]
                log.exception("engine step failed; failing %d sequences", len(failed))
                error = exc if isinstance(exc, RagraphError) else Unavailable(f"LLM engine step failed: {exc}")
                for seq in failed:
                    self._outbox.post(seq, Event("", error=error))
                self._outbox.flush()
                with self._lock:
                    self._running = []
                    self.stepper.reset()
                    self._gauges()
        with self._lock:
            pending = list(self._waiting) + self._running
            self._waiting.clear()
        for seq in pending:
            self._outbox.post(
                seq, Event("", error=Unavailable("the LLM engine shut down before this request finished"))
            )
        self._outbox.flush()

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
        self._planned = []
        with self._lock:
            plan: Plan = self.stepper.plan(self._waiting, self._running)
        self._planned = [seq for seq, _ in plan.prefill]  # failed with the running ones if the step fails
        if not plan.empty:
            step = self.stepper.run(plan, self._running)
            if step.joined:
                with self._lock:
                    self._running.extend(step.joined)
                    self._gauges()
            self._emitter.emit(step.seqs, step.logits)
        self._reap()
        self._outbox.flush()

    def _reap(self) -> None:
        """Finished and cancelled sequences leave the batch; the stepper frees their cache."""
        keep = [i for i, s in enumerate(self._running) if s.finish_reason is None and not s.cancelled]
        if len(keep) == len(self._running):
            return
        with self._lock:
            for seq in self._running:
                if seq.cancelled and seq.finish_reason is None:
                    self._emitter.count_finish(seq, "cancelled")
            self.stepper.release(self._running, keep)
            self._running = [self._running[i] for i in keep]
            self._gauges()
