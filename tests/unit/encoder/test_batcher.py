from __future__ import annotations

import asyncio
import threading

from ragraph_serving.batcher import GATHER_FACTOR, MicroBatcher


async def test_concurrent_requests_share_batches_and_keep_order() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def double(items: list[int]) -> list[int]:
        calls.append(list(items))
        gate.wait(1.0)  # the first batch runs while the others queue up
        return [2 * x for x in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(double, max_batch_size=64, max_batch_time=0.0)
    first = asyncio.create_task(batcher.submit([0]))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.submit([i, i + 100])) for i in range(1, 11)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == [0]
    assert [await t for t in rest] == [[2 * i, 2 * (i + 100)] for i in range(1, 11)]
    assert len(calls) == 2  # one batch for the early caller, one for the ten that queued
    assert len(calls[1]) == 20


async def test_batch_size_cap_and_cancelled_callers_are_dropped() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def ident(items: list[int]) -> list[int]:
        seen.append(list(items))
        gate.wait(1.0)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(ident, max_batch_size=4, max_batch_time=0.0)
    first = asyncio.create_task(batcher.submit([0]))
    await asyncio.sleep(0.05)
    doomed = asyncio.create_task(batcher.submit([99]))
    others = [asyncio.create_task(batcher.submit([i])) for i in range(1, 9)]
    await asyncio.sleep(0.05)
    doomed.cancel()
    gate.set()
    await first
    assert [await t for t in others] == [[i] for i in range(1, 9)]
    assert all(len(batch) <= 4 for batch in seen)
    assert all(99 not in batch for batch in seen)


async def test_an_idle_batcher_gathers_a_wave_that_outlasts_one_window() -> None:
    # Closed-loop clients come back one by one after a batch: each arrival within max_batch_time
    # of the last keeps the batch open, so the wave (70 ms here) shares one batch although it is
    # longer than one 50 ms window.
    calls: list[list[int]] = []
    batcher: MicroBatcher[int, int] = MicroBatcher(
        lambda items: calls.append(list(items)) or items, max_batch_size=64, max_batch_time=0.05
    )
    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(batcher.submit([i])))
        await asyncio.sleep(0.01)
    assert [await t for t in tasks] == [[i] for i in range(8)]
    assert calls == [list(range(8))]


async def test_gathering_stops_at_gather_factor_windows() -> None:
    calls: list[list[int]] = []
    window = 0.02
    batcher: MicroBatcher[int, int] = MicroBatcher(
        lambda items: calls.append(list(items)) or items, max_batch_size=1000, max_batch_time=window
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    while loop.time() - start < 3 * GATHER_FACTOR * window:  # a steady trickle, never a pause
        tasks.append(asyncio.create_task(batcher.submit([len(tasks)])))
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    assert len(calls) >= 2  # the first batch closed at the cap instead of waiting out the trickle
    assert len(calls[0]) < len(tasks)
    assert sorted(x for batch in calls for x in batch) == list(range(len(tasks)))


async def test_every_batch_and_run_compute_call_runs_on_the_one_compute_thread() -> None:
    from ragraph_serving.compute import run_compute

    threads: set[str] = set()

    def where(items: list[int]) -> list[int]:
        threads.add(threading.current_thread().name)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(where, max_batch_size=2, max_batch_time=0.0)
    for _ in range(3):  # batches one after another, and several at once
        await asyncio.gather(*(batcher.submit([i]) for i in range(7)))
    assert await run_compute(lambda: threading.current_thread().name) in threads
    assert len(threads) == 1 and threads.pop().startswith("ragraph-compute")
