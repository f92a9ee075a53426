"""The OpenAI-compatible API on the router's REST port: ``POST /v1/chat/completions`` (whole and
streamed as Server-Sent Events) and ``GET /v1/models``, through the same :class:`Edge` as V2
(keys, rate limits, request ids, metrics, tracing). Errors come back in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``); a request refused anywhere before the
answer starts is a plain error response, never a 200 and then an error. JSON shaping is
``openai_io``'s. See docs/openai.md."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import grpc
from aiohttp import web
from ragraph_client import logs
from ragraph_client.errors import RagraphError, http_status
from ragraph_client.headers import REQUEST_ID_HEADER
from ragraph_client.tensors import InferResponse

from . import openai_io, openai_out, rest_io, sse
from .edge import Edge, retry_after
from .events import DeltaEvent, Event, FinalEvent, SourcesEvent
from .openai_embed import Embeddings
from .openai_llm import LlmModel

log = logging.getLogger("ragraph.router.openai")
Reader = Callable[[dict[str, Any]], openai_io.ChatRequest]


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names in lower case, the first of repeated ones kept (as the edge takes them)."""
    return {name.lower(): value for name, value in reversed(list(headers.items()))}


def _as_ragraph(exc: Exception) -> RagraphError:
    """A RagraphError keeps its code; anything else (our bug, already logged by the edge) is INTERNAL."""
    if isinstance(exc, RagraphError):
        return exc
    return RagraphError(f"internal error: {type(exc).__name__}: {exc}", grpc.StatusCode.INTERNAL)


def error_response(exc: Exception, request_id: str) -> web.Response:
    error = _as_ragraph(exc)
    status = http_status(error.code)
    headers = {REQUEST_ID_HEADER: request_id}
    wait = retry_after(exc)
    if wait is not None:
        headers["Retry-After"] = wait
    body = rest_io.dumps(openai_out.error_body(error, status))
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


class OpenAIApi:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.llm = LlmModel(edge)
        self.embeddings = Embeddings(edge)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat),
            web.post("/v1/completions", self.completions),
            web.post("/v1/embeddings", self.embed),
            web.get("/v1/models", self.models),
            web.get("/v1/models/{model}", self.model),
        ]

    # --- models ------------------------------------------------------------------------------------

    def _let_in(self, headers: Mapping[str, str], bad_id: RagraphError | None) -> None:
        """The key first (a caller without one learns nothing about its request), then the
        ``x-request-id`` header's check (a bad one is refused, not replaced without a word)."""
        self.edge.authenticate(headers)
        if bad_id is not None:
            raise bad_id

    def _model_names(self) -> list[str]:
        return [self.edge.model, *self.llm.names, *self.embeddings.names]

    @staticmethod
    def _model_entry(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "ragraph"}

    async def models(self, request: web.Request) -> web.Response:
        headers = _lower(request.headers)
        request_id, bad_id = self.edge.identify("", headers)
        try:
            self._let_in(headers, bad_id)
        except RagraphError as exc:
            return error_response(exc, request_id)
        return web.json_response({"object": "list", "data": [self._model_entry(n) for n in self._model_names()]})

    async def model(self, request: web.Request) -> web.Response:
        headers = _lower(request.headers)
        request_id, bad_id = self.edge.identify("", headers)
        try:
            self._let_in(headers, bad_id)
            name = request.match_info["model"]
            if name not in self._model_names():
                self.edge.check_model(name)
        except RagraphError as exc:
            return error_response(exc, request_id)
        return web.json_response(self._model_entry(name))

    # --- embeddings ----------------------------------------------------------------------------------

    async def embed(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        headers = _lower(request.headers)
        request_id, bad_id = self.edge.identify("", headers)
        try:
            self._let_in(headers, bad_id)
            body = rest_io.load_body(await request.read())
        except RagraphError as exc:
            self.edge.refused("OpenAIEmbeddings", exc, started)
            return error_response(exc, request_id)
        try:
            answer = await self.embeddings.create(body, request_id, headers)
        except Exception as exc:  # noqa: BLE001 - mapped to OpenAI's error shape
            return error_response(exc, request_id)
        return web.json_response(answer, headers={REQUEST_ID_HEADER: request_id}, dumps=_dumps)

    # --- chat completions ----------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, openai_io.read_chat, "OpenAIChat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, openai_io.read_completion, "OpenAICompletion")

    async def _complete(self, request: web.Request, read: Reader, name: str) -> web.StreamResponse:
        """The key first (a caller without one learns nothing about its body), then the body,
        field by field; a refusal here is counted and logged like one from the graph. ``name``
        is the metrics method (``Stream`` added for a streamed answer)."""
        started = time.perf_counter()
        headers = _lower(request.headers)
        request_id, bad_id = self.edge.identify("", headers)
        logs.request_id.set(request_id)
        method = name
        try:
            self._let_in(headers, bad_id)
            chat = read(rest_io.load_body(await request.read()))
        except RagraphError as exc:
            self.edge.refused(method, exc, started)
            return error_response(exc, request_id)
        if chat.user is not None:
            log.info("request %s: user %r", request_id, chat.user)
        method = f"{name}Stream" if chat.stream else name
        if chat.model in self.llm.names:
            return await self._llm(request, chat, request_id, headers, method)
        infer_request = chat.infer_request(request_id)
        if not chat.stream:
            try:
                response = await self.edge.infer(infer_request, headers, None, method)
            except Exception as exc:  # noqa: BLE001 - mapped to OpenAI's error shape
                return error_response(exc, request_id)
            return self._whole(response, chat)
        stream = self.edge.stream(infer_request, headers, None, method)
        return await self._stream(request, chat, request_id, _events(stream))

    async def _llm(
        self, request: web.Request, chat: openai_io.ChatRequest, request_id: str, headers: dict[str, str], method: str
    ) -> web.StreamResponse:
        """The LLM on its own: the whole message list (or the raw prompt), no retrieval."""
        events = self.llm.events(chat, request_id, headers, method)
        if chat.stream:
            return await self._stream(request, chat, request_id, events)
        parts: list[str] = []
        final: dict[str, Any] = {}
        try:
            async for event in events:
                if isinstance(event, DeltaEvent):
                    parts.append(event.text)
                elif isinstance(event, FinalEvent):
                    final = event.parameters
        except Exception as exc:  # noqa: BLE001 - mapped to OpenAI's error shape
            return error_response(exc, request_id)
        body = openai_out.response(chat, request_id, "".join(parts), [], final)
        return web.json_response(body, headers={REQUEST_ID_HEADER: request_id}, dumps=_dumps)

    def _whole(self, response: InferResponse, chat: openai_io.ChatRequest) -> web.Response:
        answer = response.output("answer").as_strings()[0]
        sources = json.loads(response.output("sources").as_strings()[0])
        body = openai_out.response(chat, response.id, answer, sources, dict(response.parameters))
        return web.json_response(body, headers={REQUEST_ID_HEADER: response.id}, dumps=_dumps)

    async def _stream(
        self, request: web.Request, chat: openai_io.ChatRequest, request_id: str, events: AsyncGenerator[Event, None]
    ) -> web.StreamResponse:
        return await sse.respond(
            request,
            events,
            request_id,
            is_sources=lambda event: isinstance(event, SourcesEvent),
            refuse=lambda exc: error_response(exc, request_id),  # nothing sent yet: a plain error response
            pump=functools.partial(self._pump, chat, request_id),
            log=log,
            name="OpenAI",
        )

    async def _pump(
        self,
        chat: openai_io.ChatRequest,
        request_id: str,
        response: web.StreamResponse,
        head: list[Event],
        events: AsyncIterator[Event],
    ) -> None:
        """The first chunk (with the sources), a chunk per text delta, the last one (with the
        finish reason, and the usage when asked for), then ``[DONE]``."""
        sources = next((e.sources for e in head if isinstance(e, SourcesEvent)), [])
        await response.write(sse.frame(openai_out.first_chunk(chat, request_id, [s.as_json() for s in sources])))
        pending: list[Event] = [e for e in head if not isinstance(e, SourcesEvent)]

        def frames(event: Event) -> list[bytes]:
            if isinstance(event, DeltaEvent):
                return [sse.frame(openai_out.delta_chunk(chat, request_id, event.text))]
            if isinstance(event, FinalEvent):
                reason = openai_out.finish_reason(event.parameters.get("finish_reason"))
                out = [sse.frame(openai_out.delta_chunk(chat, request_id, None, reason))]
                if chat.include_usage:
                    out.append(sse.frame(openai_out.usage_chunk(chat, request_id, event.parameters)))
                return out
            return []

        if await sse.relay(response, pending, events, frames, _error_frame):
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()


def _error_frame(exc: Exception) -> bytes:
    """An error after the status line: OpenAI's error object as a ``data:`` event."""
    error = _as_ragraph(exc)
    return sse.frame(openai_out.error_body(error, http_status(error.code)))


def _dumps(data: Any) -> str:
    return rest_io.dumps(data).decode("utf-8")


async def _events(stream: AsyncGenerator[tuple[Event, InferResponse | None], None]) -> AsyncGenerator[Event, None]:
    try:
        async for event, _ in stream:
            yield event
    finally:
        await stream.aclose()
