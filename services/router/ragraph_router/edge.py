"""What every front door of the router (the gRPC servicer, the REST gateway) does around the
graph, in one place: check the API key and the rate limits, give the request an id, open its
trace, run the graph, measure it, and charge the tokens it generated to the caller's key.

Doors convert their wire format to an :class:`InferRequest` and back; errors come out as
:class:`RagraphError` for the door to map (``retry_after_s`` on rate-limit errors)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, Mapping
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
        key check and body reading), as :meth:`_events` counts the others."""
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

    async def _admit(self, request: InferRequest, headers: Mapping[str, str]) -> Principal:
        principal = self.authenticate(headers)
        self.check_model(request.model_name, request.model_version)
        try:
            await self.gate.admit(principal)
        except ResourceExhausted as exc:
            self.metrics.rate_limited.labels(getattr(exc, "limit", "requests")).inc()
            raise
        return principal

    def _enter(self) -> None:
        """Take an in-flight slot, or refuse before any node is called."""
        if self.max_inflight and self.inflight >= self.max_inflight:
            self.metrics.overloaded.inc()
            raise Overloaded(self.max_inflight)
        self.inflight += 1
        self.metrics.inflight_requests.set(self.inflight)

    def _leave(self) -> None:
        self.inflight -= 1
        self.metrics.inflight_requests.set(self.inflight)

    # --- running the graph ----------------------------------------------------------------------

    async def _events(
        self, request: InferRequest, headers: Mapping[str, str], remaining: float | None, method: str, streaming: bool
    ) -> AsyncGenerator[Event, None]:
        started = time.perf_counter()
        request.id, bad_id = self.identify(request.id, headers)
        logs.request_id.set(request.id)
        span = self.tracing.start(f"{self.model} {method}", headers=headers, attrs={"ragraph.request_id": request.id})
        code = "OK"
        principal: Principal | None = None
        deltas, charged, running = 0, False, False
        if streaming:
            self.metrics.inflight_streams.inc()
        try:
            principal = await self._admit(request, headers)
            if bad_id is not None:
                raise bad_id
            rag = rag_io.read_request(request, self.service.settings, self.service.forwarded)
            rag.trace = span
            self._enter()
            running = True
            first: float | None = None
            async for event in self.service.stream(rag, remaining):
                if isinstance(event, DeltaEvent):
                    deltas += 1
                    if first is None:
                        first = time.perf_counter()
                        self.metrics.ttft.observe(first - started)
                if isinstance(event, FinalEvent):
                    charged = True
                    await self._account(principal, event, first)
                yield event
        except BaseException as exc:
            code = code_name(exc)
            if code == "INTERNAL":
                log.error("request %s failed with our bug", request.id, exc_info=exc)
            if span is not None:
                fail(span, exc)
            raise
        finally:
            if running:
                self._leave()
            if principal is not None and deltas and not charged:
                # the stream ended early (caller gone, node failed): the final count never came;
                # each delta is at least one generated token, so charge that much
                await self._charge(principal, deltas)
            if streaming:
                self.metrics.inflight_streams.dec()
            self.metrics.requests.labels(method, code).inc()
            self.metrics.request_seconds.labels(method).observe(time.perf_counter() - started)
            if span is not None:
                span.end()

    async def _account(self, principal: Principal, final: FinalEvent, first: float | None) -> None:
        tokens = int(final.parameters.get("completion_tokens", 0) or 0)
        if tokens <= 0:
            return
        self.metrics.completion_tokens.inc(tokens)
        if first is not None and tokens > 1:
            elapsed = time.perf_counter() - first
            if elapsed > 0:
                self.metrics.tokens_per_second.observe((tokens - 1) / elapsed)
        await self._charge(principal, tokens)

    async def _charge(self, principal: Principal, tokens: int) -> None:
        try:
            await self.gate.charge(principal, tokens)
        except Unavailable as exc:  # the answer is already out: a limits-backend blip must not fail it
            log.warning("could not charge %d tokens to key %s: %s", tokens, principal.key_id, exc.message)

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
