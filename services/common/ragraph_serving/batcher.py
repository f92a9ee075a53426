"""Adaptive micro-batching for models called by many concurrent requests, with two priorities.

Requests arriving while a batch computes are gathered into the next one, up to
``max_batch_size`` items and ``max_batch_cost`` cost (padded tokens for the encoder: items x the
costliest item). An idle batcher waits for company while requests keep arriving: each arrival
within ``max_batch_time`` of the last extends the wait, up to ``GATHER_FACTOR`` x
``max_batch_time`` in all. Closed-loop clients come back as a wave when a batch completes;
waiting for the whole wave gives full batches instead of a full one and a ragged one (measured
in docs/benchmarks.md).

Requests are cut, not batched whole, and a batch holds one priority: while INTERACTIVE items
wait, the next batch takes only those; otherwise it takes BULK items, up to ``bulk_batch_cost``
(smaller than a full batch, so an interactive request that arrives while a bulk batch computes
waits for a short one). A request of a thousand items thus runs as many batches, and a small
request that arrives meanwhile goes next instead of waiting for the whole of it. Interactive
traffic that keeps the model busy all the time starves bulk traffic: that is the point of it.
Each request's results come back together and in order. Each priority has its own queue bound
(``max_queued`` items waiting): beyond it :meth:`MicroBatcher.submit` raises ResourceExhausted at
once, so bulk traffic cannot crowd interactive traffic out of the queue.

Unlike MLServer's adaptive batching, requests keep their own parameters and a bad request never
joins a batch (runtimes validate before submitting), so it cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, TypeVar

from ragraph_client.errors import ResourceExhausted

from .compute import run_compute

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("ragraph.batcher")

# How many max_batch_time windows an idle batcher (or the LLM engine) may spend gathering a burst.
GATHER_FACTOR = 5


class Priority(IntEnum):
    """INTERACTIVE items go into batches before any BULK item."""

    INTERACTIVE = 0
    BULK = 1


@dataclass(eq=False)
class _Pending(Generic[T, R]):
    items: Sequence[T]
    costs: Sequence[int]
    priority: Priority
    results: list[R | None] = field(init=False)
    taken: int = 0  # items handed to batches so far
    finished: int = 0  # items whose results are in
    future: asyncio.Future[list[R]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)


@dataclass
class _Slice(Generic[T, R]):
    pending: _Pending[T, R]
    start: int
    stop: int


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        max_batch_size: int = 32,
        max_batch_time: float = 0.002,
        max_batch_cost: int | None = None,
        max_queued: int | None = None,
        bulk_batch_cost: int | None = None,
        bulk_fn: Callable[[list[T]], Sequence[R]] | None = None,
    ) -> None:
        self.fn = fn
        self._fn = {Priority.INTERACTIVE: fn, Priority.BULK: bulk_fn or fn}  # bulk batches may run differently
        self.max_batch_size = max_batch_size
        self.max_batch_time = max_batch_time
        self.max_queued = max_queued
        self._cost_limit = {Priority.INTERACTIVE: max_batch_cost, Priority.BULK: bulk_batch_cost or max_batch_cost}
        self._queues: dict[Priority, deque[_Pending[T, R]]] = {p: deque() for p in Priority}
        self._waiting: dict[Priority, int] = {p: 0 for p in Priority}  # items not yet in a batch
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # recent batch sizes, for tuning and tests
        self.batch_priorities: list[list[Priority]] = []  # each recent batch's items' priorities, for tests

    def queued(self, priority: Priority) -> int:
        """Items of ``priority`` waiting for a batch."""
        return self._waiting[priority]

    async def submit(
        self, items: Sequence[T], priority: Priority = Priority.INTERACTIVE, costs: Sequence[int] | None = None
    ) -> list[R]:
        """``fn``'s results for ``items``, in order. ``costs``: each item's share of
        ``max_batch_cost`` (default 1 each). ResourceExhausted when the queue of ``priority`` is full."""
        if not items:
            return []
        waiting = self._waiting[priority]
        if self.max_queued is not None and waiting and waiting + len(items) > self.max_queued:
            raise ResourceExhausted(
                f"the {priority.name.lower()} queue is full: {waiting} items waiting, {len(items)} more would pass "
                f"the limit of {self.max_queued}; retry later"
            )
        if self._task is None or self._task.done():
            self._arrived = asyncio.Event()
            self._task = asyncio.create_task(self._loop())
        pending: _Pending[T, R] = _Pending(items, list(costs) if costs is not None else [1] * len(items), priority)
        self._queues[priority].append(pending)
        self._waiting[priority] += len(items)
        assert self._arrived is not None
        self._arrived.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._drop(pending)
            raise

    def _drop(self, pending: _Pending[T, R]) -> None:
        """A caller that went away: its items not yet in a batch never join one."""
        queue = self._queues[pending.priority]
        if pending in queue:
            queue.remove(pending)
            self._waiting[pending.priority] -= len(pending.items) - pending.taken

    def _fits(self, limit: int | None, count: int, widest: int, cost: int) -> bool:
        """Whether one more item of ``cost`` fits a batch of ``count`` items (padded cost: items x
        the costliest); the first item always does."""
        if count == 0:
            return True
        return count < self.max_batch_size and (limit is None or (count + 1) * max(widest, cost) <= limit)

    def _take(self) -> list[_Slice[T, R]]:
        """The next batch: the waiting interactive items, else bulk ones, in arrival order."""
        priority = next((p for p in Priority if self._waiting[p]), Priority.INTERACTIVE)
        limit, queue = self._cost_limit[priority], self._queues[priority]
        slices: list[_Slice[T, R]] = []
        count, widest = 0, 0
        while queue:
            pending = queue[0]
            start = stop = pending.taken
            while stop < len(pending.items) and self._fits(limit, count, widest, pending.costs[stop]):
                widest = max(widest, pending.costs[stop])
                count += 1
                stop += 1
            if stop > start:
                slices.append(_Slice(pending, start, stop))
                pending.taken = stop
                self._waiting[priority] -= stop - start
            if pending.taken < len(pending.items):
                break  # the batch is full
            queue.popleft()
        return slices

    def _total_waiting(self) -> int:
        return sum(self._waiting.values())

    async def _gather(self) -> list[_Slice[T, R]]:
        assert self._arrived is not None
        while not self._total_waiting():
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_FACTOR * self.max_batch_time
        while self._total_waiting() < self.max_batch_size:
            remaining = min(self.max_batch_time, deadline - loop.time())
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return self._take()

    async def _loop(self) -> None:
        while True:
            batch = [s for s in await self._gather() if not s.pending.future.done()]  # callers gone: dropped
            if not batch:
                continue
            flat = [x for s in batch for x in s.pending.items[s.start : s.stop]]
            self.batch_sizes = (self.batch_sizes + [len(flat)])[-1000:]
            priorities = [s.pending.priority for s in batch for _ in range(s.start, s.stop)]
            self.batch_priorities = (self.batch_priorities + [priorities])[-1000:]
            try:
                results = await run_compute(self._fn[batch[0].pending.priority], flat)
            except Exception as exc:  # a bug in fn: every caller of this batch gets it
                for s in batch:
                    self._drop(s.pending)
                    if not s.pending.future.done():
                        s.pending.future.set_exception(exc)
                continue
            offset = 0
            for s in batch:
                p, n = s.pending, s.stop - s.start
                p.results[s.start : s.stop] = results[offset : offset + n]
                p.finished += n
                offset += n
                if p.finished == len(p.items) and not p.future.done():
                    p.future.set_result(list(p.results))  # type: ignore[arg-type]
