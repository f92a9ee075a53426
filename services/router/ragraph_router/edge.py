"""What every front door of the router (the gRPC servicer, the REST gateway, the OpenAI-compatible
API) does around the graph, in one place: check the API key and the rate limits, give the request
an id, open its trace, run the graph, measure it, and charge the tokens it generated to the
caller's key. :meth:`Edge.call`, :meth:`Edge.admit` and :meth:`Edge.slot` are those steps for a
call that runs something else (the OpenAI API's calls to one node, ``openai_edge``).

Doors convert their wire format to an :class:`InferRequest` and back; errors come out as
:class:`RagraphError` for the door to map (``retry_after_s`` on rate-limit errors)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ragraph_client import logs
from ragraph_client.errors import (
    InvalidArgument,
    NotFound,
    RagraphError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from ragraph_client.headers import REQUEST_ID_HEADER
from ragraph_client.tensors import InferRequest, InferResponse

from . import rag_io
from .access.gate import Gate, Principal
from .events import DeltaEvent, Event, FinalEvent
from .service import RouterService
from .telemetry import RouterMetrics, Tracing, fail

log = logging.getLogger("ragraph.router")


def retry_after(exc: BaseException) -> str | None:
    """The ``retry-after`` value (whole seconds, at least 1) of a rate-limit refusal, else None."""
    seconds = getattr(exc, "retry_after_s", None)
    return None if seconds is None else str(max(1, math.ceil(seconds)))


class Overloaded(ResourceExhausted):
    """The router is running as many graphs as ``max_inflight`` allows."""

    retry_after_s = 1.0

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"router overloaded: {limit} requests are being answered, its limit (RAGRAPH_ROUTER_MAX_INFLIGHT); "
            "retry later"
        )


@dataclass
class Call:
    """One request through the edge (:meth:`Edge.call`)."""

    request_id: str
    span: Any  # the request's span, None when tracing is off
    started: float  # time.perf_counter() when it came in
    principal: Principal | None = None  # the caller, once admitted
    tokens: int = 0  # generated tokens not yet charged: charged to the caller's key when the call ends


def code_name(exc: BaseException) -> str:
    """The gRPC status code name an exception leaves the router with."""
    if isinstance(exc, RagraphError):
        return exc.code.name
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"
    return "INTERNAL"


class Edge:
    def __init__(self, service: RouterService, gate: Gate, metrics: RouterMetrics, tracing: Tracing) -> None:
        self.service = service
        self.gate = gate
        self.metrics = metrics
        self.tracing = tracing
        self.model = service.settings.model_name
        self.max_inflight = service.settings.max_inflight
        self.inflight = 0  # graph runs under way (one event loop: no lock needed)

    # --- checks --------------------------------------------------------------------------------

    @staticmethod
    def identify(given: str, headers: Mapping[str, str]) -> tuple[str, InvalidArgument | None]:
        """The request's id: the V2 ``id``, else the ``x-request-id`` header, else a new one. A
        given one that is not a valid id (``logs.check_request_id``) is never used: a new id
        comes back with the error, for the caller to raise once the key is checked."""
        header = headers.get(REQUEST_ID_HEADER) or ""
        for value, name in ((given, "id"), (header, f"header {REQUEST_ID_HEADER}")):
            if value:
                try:
                    logs.check_request_id(value, name)
                except InvalidArgument as exc:
                    return logs.new_request_id(), exc
        return given or header or logs.new_request_id(), None

    def refused(self, method: str, exc: BaseException, started: float) -> None:
        """Count a request that a door refused before the graph could run (the REST gateway's
        key check and body reading), as :meth:`call` counts the others."""
        code = code_name(exc)
        if code == "INTERNAL":
            log.error("request refused by our bug", exc_info=exc)
        self.metrics.requests.labels(method, code).inc()
        self.metrics.request_seconds.labels(method).observe(time.perf_counter() - started)

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        try:
            return self.gate.authenticate(headers)
        except Unauthenticated:
            self.metrics.unauthenticated.inc()
            raise

    def check_model(self, name: str, version: str = "") -> None:
        if name != self.model:
            raise NotFound(f"unknown model '{name}': this router serves '{self.model}'")
        rag_io.check_version(name, version)

    async def admit(self, headers: Mapping[str, str], model: str | None = None, version: str = "") -> Principal:
        """The caller, let in: its key checked, the model (when named) checked, and a request
        taken from its rate limits (a refusal counted)."""
        principal = self.authenticate(headers)
        if model is not None:
            self.check_model(model, version)
        try:
            await self.gate.admit(principal)
        except ResourceExhausted as exc:
            self.metrics.rate_limited.labels(getattr(exc, "limit", "requests")).inc()
            raise
        return principal

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Inside: an in-flight slot, taken (or the request refused before any node is called)
        and given back."""
        if self.max_inflight and self.inflight >= self.max_inflight:
            self.metrics.overloaded.inc()
            raise Overloaded(self.max_inflight)
        self.inflight += 1
        self.metrics.inflight_requests.set(self.inflight)
        try:
            yield
        finally:
            self.inflight -= 1
            self.metrics.inflight_requests.set(self.inflight)

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Charge generated tokens to the caller's key; a limits-backend blip is logged, not
        raised (the answer is already out)."""
        try:
            await self.gate.charge(principal, tokens)
        except Unavailable as exc:
            log.warning("could not charge %d tokens to key %s: %s", tokens, principal.key_id, exc.message)

    @asynccontextmanager
    async def call(
        self,
        request_id: str,
        headers: Mapping[str, str],
        method: str,
        span_name: str | None = None,
        streaming: bool = False,
    ) -> AsyncIterator[Call]:
        """One request through the edge, whatever it runs: its log id and trace span, and when it
        ends, ``call.tokens`` charged to ``call.principal`` (the caller once :meth:`admit` let it
        in), the request counted and timed under ``method`` with the code it ended with (our
        bugs logged), and the span closed. ``span_name``: ``method`` when not given."""
        started = time.perf_counter()
        logs.request_id.set(request_id)
        span = self.tracing.start(span_name or method, headers=headers, attrs={"ragraph.request_id": request_id})
        call = Call(request_id, span, started)
        code = "OK"
        if streaming:
            self.metrics.inflight_streams.inc()
        try:
            yield call
        except BaseException as exc:
            code = code_name(exc)
            if code == "INTERNAL":
                log.error("request %s failed with our bug", request_id, exc_info=exc)
            if span is not None:
                fail(span, exc)
            raise
        finally:
            if call.principal is not None and call.tokens > 0:
                await self.charge(call.principal, call.tokens)
            if streaming:
                self.metrics.inflight_streams.dec()
            self.metrics.requests.labels(method, code).inc()
            self.metrics.request_seconds.labels(method).observe(time.perf_counter() - started)
            if span is not None:
                span.end()

    # --- running the graph ----------------------------------------------------------------------

    async def _events(
        self, request: InferRequest, headers: Mapping[str, str], remaining: float | None, method: str, streaming: bool
    ) -> AsyncGenerator[Event, None]:
        request.id, bad_id = self.identify(request.id, headers)
        async with self.call(request.id, headers, method, f"{self.model} {method}", streaming) as call:
            call.principal = await self.admit(headers, request.model_name, request.model_version)
            if bad_id is not None:
                raise bad_id
            rag = rag_io.read_request(request, self.service.settings, self.service.forwarded)
            rag.trace = call.span
            async with self.slot():
                first: float | None = None
                async for event in self.service.stream(rag, remaining):
                    if isinstance(event, DeltaEvent):
                        # should the stream end early (caller gone, node failed), the final count
                        # never comes: each delta is at least one generated token, charged at the end
                        call.tokens += 1
                        if first is None:
                            first = time.perf_counter()
                            self.metrics.ttft.observe(first - call.started)
                    if isinstance(event, FinalEvent):
                        call.tokens = 0
                        await self._account(call.principal, event, first)
                    yield event

    async def _account(self, principal: Principal, final: FinalEvent, first: float | None) -> None:
        tokens = int(final.parameters.get("completion_tokens", 0) or 0)
        if tokens <= 0:
            return
        self.metrics.completion_tokens.inc(tokens)
        if first is not None and tokens > 1:
            elapsed = time.perf_counter() - first
            if elapsed > 0:
                self.metrics.tokens_per_second.observe((tokens - 1) / elapsed)
        await self.charge(principal, tokens)

    async def infer(
        self, request: InferRequest, headers: Mapping[str, str], remaining: float | None, method: str
    ) -> InferResponse:
        """The whole answer (ModelInfer, REST infer)."""
        final: FinalEvent | None = None
        async for event in self._events(request, headers, remaining, method, streaming=False):
            if isinstance(event, FinalEvent):
                final = event
        assert final is not None
        return rag_io.final_response(final, self.model, request.id, request.outputs)

    async def stream(
        self, request: InferRequest, headers: Mapping[str, str], remaining: float | None, method: str
    ) -> AsyncGenerator[tuple[Event, InferResponse | None], None]:
        """Sources, each text delta, then the final message, as they happen; the response is
        None for an event whose output the request did not ask for."""
        events = self._events(request, headers, remaining, method, streaming=True)
        try:
            async for event in events:
                yield event, rag_io.event_response(event, self.model, request.id, request.outputs)
        finally:
            await events.aclose()

    def metadata_for(self, headers: Mapping[str, str], name: str, version: str = "") -> Any:
        self.authenticate(headers)
        self.check_model(name, version)
        return rag_io.metadata(self.model)

    async def close(self) -> None:
        await self.gate.close()
