"""Server-Sent Events for the router's REST doors (V2 ``generate_stream``, the OpenAI API's
streamed completions): one way to open a stream, relay its events, and close it when the client
goes away.

The status line waits for the stream's head (its events up to the first that is not the
sources): a request refused or invalid anywhere before the answer starts gets a plain error
response with its own status. After that an error is reported in band, and the stream ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiohttp import web
from ragraph_client.headers import REQUEST_ID_HEADER

from . import rest_io

T = TypeVar("T")

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass events through as they come
}


def frame(data: Any, event: str | None = None) -> bytes:
    """One event: ``data:`` with the JSON, after ``event:`` when named."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + rest_io.dumps(data) + b"\n\n"


async def _head(events: AsyncIterator[T], is_sources: Callable[[T], bool]) -> list[T]:
    """The stream's events up to and including the first that is not the sources."""
    head: list[T] = []
    async for item in events:
        head.append(item)
        if not is_sources(item):
            break
    return head


async def respond(
    request: web.Request,
    events: AsyncGenerator[T, None],
    request_id: str,
    *,
    is_sources: Callable[[T], bool],
    refuse: Callable[[Exception], web.StreamResponse],
    pump: Callable[[web.StreamResponse, list[T], AsyncIterator[T]], Awaitable[None]],
    log: logging.Logger,
    name: str,
) -> web.StreamResponse:
    """Stream ``events`` to the client. An error before the head is read is ``refuse(exc)``'s
    (a plain error response, or raised for the door's error handler); once the head is in, the
    status line goes out and ``pump(response, head, events)`` writes the stream. A client that goes away
    (while we write, or while we wait: aiohttp's handler cancellation) is logged under ``name``;
    ``events`` is closed in every case, which stops the graph, and the LLM call, if still running."""
    try:
        try:
            head = await _head(events, is_sources)
        except Exception as exc:  # noqa: BLE001 - nothing sent yet: a plain error response
            return refuse(exc)
        response = web.StreamResponse(headers={**HEADERS, REQUEST_ID_HEADER: request_id})
        await response.prepare(request)
        try:
            await pump(response, head, events)
        except ConnectionResetError:  # the client went away while we wrote
            log.info("%s stream %s: client disconnected", name, request_id)
        except asyncio.CancelledError:  # ... or while we waited
            log.info("%s stream %s: client disconnected", name, request_id)
            raise
        return response
    finally:
        await events.aclose()


async def relay(
    response: web.StreamResponse,
    pending: list[T],
    events: AsyncIterator[T],
    frames: Callable[[T], Iterable[bytes]],
    error: Callable[[Exception], bytes],
) -> bool:
    """Write the ``pending`` events, then the rest of ``events`` as they come, each as its
    ``frames``. An error from the stream is written as ``error(exc)`` (the status line is sent:
    it is reported in band) and False comes back; True when the stream ended."""
    for item in pending:
        for chunk in frames(item):
            await response.write(chunk)
    while True:
        try:
            item = await anext(events)
        except StopAsyncIteration:
            return True
        except Exception as exc:  # noqa: BLE001 - the status line is sent: report in band
            await response.write(error(exc))
            return False
        for chunk in frames(item):
            await response.write(chunk)
