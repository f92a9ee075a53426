"""A step's events on their way from the engine thread to the requests' event loops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .sequence import Event, Sequence

Put = Callable[[Event], object]


def deliver(items: list[tuple[Put, Event]]) -> None:
    """Runs in a consumer's event loop: each event onto its sequence's queue."""
    for put, event in items:
        put(event)


class Outbox:
    """Events posted during a step, handed over at its end (engine thread only)."""

    def __init__(self) -> None:
        self._events: list[tuple[Sequence, Event]] = []

    def post(self, seq: Sequence, event: Event) -> None:
        self._events.append((seq, event))

    def flush(self) -> None:
        """Hand the events to their consumers' event loops: one wake-up per loop and step
        instead of one per event (each costs a syscall in this thread and a wake-up there)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Put, Event]]] = {}
        for seq, event in self._events:
            by_loop.setdefault(seq.loop, []).append((seq.put, event))
        self._events = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(deliver, items)
            except RuntimeError:  # that loop is closed: nobody is left to read these events
                pass
