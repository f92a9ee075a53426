"""The micro-batcher cuts large requests into batches, serves interactive items before bulk ones,
bounds each batch's cost and each priority's queue, and forgets callers that went away."""

from __future__ import annotations

import asyncio
import threading

import pytest
from ragraph_client.errors import ResourceExhausted
from ragraph_serving.batcher import MicroBatcher, Priority


class Gated:
    """A batch function that records its batches and holds each one until released."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = threading.Semaphore(0)
        self.free = False

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        if not self.free:
            self.gate.acquire(timeout=5)
        return [10 * x for x in items]

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()

    def run_free(self) -> None:
        self.free = True
        self.release(1000)


async def until(check: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_a_large_request_is_cut_and_a_small_one_goes_between_its_pieces() -> None:
    fn = Gated()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=4, max_batch_time=0.0)
    large = asyncio.create_task(batcher.submit(list(range(100, 120)), Priority.BULK))
    await until(lambda: len(fn.calls) == 1)
    small = asyncio.create_task(batcher.submit([1, 2]))  # interactive, arrives during piece one
    await asyncio.sleep(0.02)
    fn.release()
    await until(lambda: len(fn.calls) == 2)
    assert fn.calls == [[100, 101, 102, 103], [1, 2]]  # the small request ran next, alone
    fn.run_free()
    assert await small == [10, 20]
    assert await large == [10 * x for x in range(100, 120)]
    assert [len(c) for c in fn.calls] == [4, 2, 4, 4, 4, 4]
    assert batcher.batch_priorities[1] == [Priority.INTERACTIVE] * 2
    assert all(p == [Priority.BULK] * 4 for p in batcher.batch_priorities[2:])


async def test_interactive_items_never_share_a_batch_with_bulk_ones() -> None:
    fn = Gated()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=8, max_batch_time=0.0)
    first = asyncio.create_task(batcher.submit([0], Priority.BULK))
    await until(lambda: len(fn.calls) == 1)
    bulk = [asyncio.create_task(batcher.submit([100 + i], Priority.BULK)) for i in range(3)]
    await asyncio.sleep(0.01)
    interactive = [asyncio.create_task(batcher.submit([i])) for i in range(1, 4)]  # arrive after the bulk ones
    await asyncio.sleep(0.01)
    fn.run_free()
    assert [await t for t in interactive] == [[10], [20], [30]]
    assert [await t for t in bulk] == [[1000], [1010], [1020]]
    await first
    assert fn.calls == [[0], [1, 2, 3], [100, 101, 102]]
    assert all(len(set(p)) == 1 for p in batcher.batch_priorities)


async def test_batch_cost_bounds_padded_cost_and_bulk_has_its_own_bound() -> None:
    seen: list[list[int]] = []

    def record(items: list[int]) -> list[int]:
        seen.append(list(items))
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(
        record, max_batch_size=32, max_batch_time=0.0, max_batch_cost=300, bulk_batch_cost=120
    )
    costs = [50, 50, 100, 10, 10, 10, 10, 250, 400]
    assert await batcher.submit(list(range(9)), Priority.INTERACTIVE, costs) == list(range(9))
    # padded cost: items x the costliest of them, at most 300; an item over the limit goes alone
    assert seen == [[0, 1, 2], [3, 4, 5, 6], [7], [8]]
    seen.clear()
    assert await batcher.submit(list(range(9)), Priority.BULK, costs) == list(range(9))
    assert seen == [[0, 1], [2], [3, 4, 5, 6], [7], [8]]  # at most 120 for bulk batches


async def test_each_priority_has_a_bounded_queue() -> None:
    fn = Gated()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=2, max_batch_time=0.0, max_queued=10)
    running = asyncio.create_task(batcher.submit([0, 1], Priority.BULK))
    await until(lambda: len(fn.calls) == 1)
    waiting = asyncio.create_task(batcher.submit(list(range(8)), Priority.BULK))
    await until(lambda: batcher.queued(Priority.BULK) == 8)
    with pytest.raises(ResourceExhausted) as info:
        await batcher.submit([1, 2, 3], Priority.BULK)
    assert info.value.message == (
        "the bulk queue is full: 8 items waiting, 3 more would pass the limit of 10; retry later"
    )
    # bulk traffic does not fill the interactive queue
    interactive = asyncio.create_task(batcher.submit(list(range(10))))
    await until(lambda: batcher.queued(Priority.INTERACTIVE) == 10)
    with pytest.raises(ResourceExhausted, match="^the interactive queue is full: 10 items waiting"):
        await batcher.submit([1])
    fn.run_free()
    await asyncio.gather(running, waiting, interactive)
    assert batcher.queued(Priority.BULK) == batcher.queued(Priority.INTERACTIVE) == 0
    assert await batcher.submit([7, 8, 9], Priority.BULK) == [70, 80, 90]  # room again


async def test_a_caller_that_goes_away_leaves_its_remaining_pieces_undone() -> None:
    fn = Gated()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=2, max_batch_time=0.0, max_queued=100)
    doomed = asyncio.create_task(batcher.submit(list(range(100, 140)), Priority.BULK))
    await until(lambda: len(fn.calls) == 1)
    assert batcher.queued(Priority.BULK) == 38
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert batcher.queued(Priority.BULK) == 0
    after = asyncio.create_task(batcher.submit([5]))
    fn.run_free()
    assert await after == [50]
    assert fn.calls == [[100, 101], [5]]


async def test_a_failing_batch_fails_its_callers_and_the_rest_of_their_requests() -> None:
    calls: list[list[int]] = []

    def flaky(items: list[int]) -> list[int]:
        calls.append(list(items))
        if 13 in items:
            raise ValueError("bad item 13")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(flaky, max_batch_size=4, max_batch_time=0.0, max_queued=100)
    with pytest.raises(ValueError, match="bad item 13"):
        await batcher.submit(list(range(10, 30)), Priority.BULK)
    assert calls == [[10, 11, 12, 13]]  # the failed request's later pieces never ran
    assert batcher.queued(Priority.BULK) == 0
    assert await batcher.submit([1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]


async def test_bulk_batches_run_the_bulk_function() -> None:
    ran: list[tuple[str, list[int]]] = []

    def interactive(items: list[int]) -> list[int]:
        ran.append(("interactive", list(items)))
        return items

    def bulk(items: list[int]) -> list[int]:
        ran.append(("bulk", list(items)))
        return [-x for x in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(interactive, max_batch_size=4, max_batch_time=0.0, bulk_fn=bulk)
    assert await batcher.submit([1, 2, 3, 4, 5], Priority.BULK) == [-1, -2, -3, -4, -5]
    assert await batcher.submit([6]) == [6]
    assert ran == [("bulk", [1, 2, 3, 4]), ("bulk", [5]), ("interactive", [6])]
