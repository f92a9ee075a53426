"""Adaptive micro-batching for models called by many concurrent requests.

Requests arriving while a batch computes are gathered into the next one, up to
``max_batch_size`` items. An idle batcher waits for company while requests keep arriving: each
arrival within ``max_batch_time`` of the last extends the wait, up to ``GATHER_FACTOR`` x
``max_batch_time`` in all. Closed-loop clients come back as a wave when a batch completes;
waiting for the whole wave gives full batches instead of a full one and a ragged one (measured
in docs/benchmarks.md). Each request's items stay together and its results come back in order.
Unlike MLServer's adaptive batching, requests keep their own parameters and a bad request never joins a batch
(runtimes validate before submitting), so it cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .compute import run_compute

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("ragraph.batcher")

# How many max_batch_time windows an idle batcher (or the LLM engine) may spend gathering a burst.
GATHER_FACTOR = 5


@dataclass
class _Pending(Generic[T, R]):
    items: Sequence[T]
    future: asyncio.Future[list[R]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher(Generic[T, R]):
    def __init__(
        self, fn: Callable[[list[T]], Sequence[R]], max_batch_size: int = 32, max_batch_time: float = 0.002
    ) -> None:
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_batch_time = max_batch_time
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # recent batch sizes, for tuning and tests

    async def submit(self, items: Sequence[T]) -> list[R]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())
        pending: _Pending[T, R] = _Pending(items)
        await self._queue.put(pending)
        return await pending.future

    async def _gather(self) -> list[_Pending[T, R]]:
        batch = [await self._queue.get()]
        size = len(batch[0].items)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_FACTOR * self.max_batch_time
        while size < self.max_batch_size:
            if self._queue.empty():
                remaining = min(self.max_batch_time, deadline - loop.time())
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            batch.append(item)
            size += len(item.items)
        return [p for p in batch if not p.future.done()]  # callers that went away are dropped

    async def _loop(self) -> None:
        while True:
            batch = await self._gather()
            if not batch:
                continue
            flat = [x for p in batch for x in p.items]
            self.batch_sizes = (self.batch_sizes + [len(flat)])[-1000:]
            try:
                results = await run_compute(self.fn, flat)
            except Exception as exc:  # a bug in fn: every caller of this batch gets it
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            offset = 0
            for p in batch:
                n = len(p.items)
                if not p.future.done():
                    p.future.set_result(list(results[offset : offset + n]))
                offset += n
