"""ragraph_router.sse: the status line waits for the stream's head, an error before it is a plain
response, an error after it is reported in band, and the events are closed in every case."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict
from ragraph_router import sse

SOURCES = "sources"
log = logging.getLogger("test.sse")


class Stream:
    """Events from a list; an Exception in it is raised there. Records whether it was closed."""

    def __init__(self, items: list[object]) -> None:
        self.items = items
        self.closed = False

    async def events(self) -> AsyncGenerator[str, None]:
        try:
            for item in self.items:
                if isinstance(item, Exception):
                    raise item
                yield str(item)
        finally:
            self.closed = True


def frames(item: str) -> list[bytes]:
    return [sse.frame({"text": item})]


def error(exc: Exception) -> bytes:
    return sse.frame({"error": str(exc)}, event="error")


async def pump(response: web.StreamResponse, head: list[str], events: AsyncIterator[str]) -> None:
    if await sse.relay(response, head, events, frames, error):
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()


async def serve(stream: Stream) -> tuple[int, CIMultiDict[str], str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse.respond(
            request,
            stream.events(),
            "req-1",
            is_sources=lambda item: item == SOURCES,
            refuse=lambda exc: web.json_response({"refused": str(exc)}, status=400),
            pump=pump,
            log=log,
            name="Test",
        )

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/")
        return response.status, response.headers.copy(), await response.text()


def data(body: str) -> list[str]:
    return [line for line in body.split("\n") if line]


async def test_a_stream_is_its_events_then_the_trailer() -> None:
    stream = Stream([SOURCES, "a", "b"])
    status, headers, body = await serve(stream)
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["x-request-id"] == "req-1"
    assert data(body) == [
        'data: {"text":"sources"}',
        'data: {"text":"a"}',
        'data: {"text":"b"}',
        "data: [DONE]",
    ]
    assert stream.closed


async def test_an_error_before_the_answer_starts_is_a_plain_response() -> None:
    stream = Stream([SOURCES, ValueError("no answer")])
    status, headers, body = await serve(stream)
    assert status == 400
    assert json.loads(body) == {"refused": "no answer"}
    assert stream.closed


async def test_an_error_after_the_status_line_is_in_band_and_ends_the_stream() -> None:
    stream = Stream([SOURCES, "a", ValueError("node down"), "never"])
    status, _, body = await serve(stream)
    assert status == 200
    assert data(body) == [
        'data: {"text":"sources"}',
        'data: {"text":"a"}',
        "event: error",
        'data: {"error":"node down"}',
    ]
    assert stream.closed


def test_a_frame_names_its_event_when_given() -> None:
    assert sse.frame({"x": 1}) == b'data: {"x":1}\n\n'
    assert sse.frame({"x": 1}, event="error") == b'event: error\ndata: {"x":1}\n\n'
