"""One thread per process for model compute.

torch's CPU parallelism (GNU OpenMP on these builds) gives every thread that runs a parallel
region a team of worker threads. Once the process holds more such threads than cores, idle
workers stop spin-waiting between regions, and every one of a forward pass's many small parallel
regions pays a wake-up. ``asyncio.to_thread`` hands successive calls to whichever pool thread is
free, so a model loaded on the event loop and run through it soon has several teams. Measured
with the LLM bench model: a one-row step cost 9.5 ms on a second thread against 6.2 ms when one
thread did everything (docs/benchmarks.md). Loading, warming and running models through
:func:`run_compute` keeps them on one thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragraph-compute")


async def run_compute(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` on the process's compute thread, awaited from the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, functools.partial(fn, *args, **kwargs))
