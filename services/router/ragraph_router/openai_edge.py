"""What the :class:`Edge` does around a graph run, for the OpenAI-compatible API's calls that go
to one node instead (the ``llm`` model, embeddings): the key, the rate limits, readiness, the
in-flight limit, a trace span, the request metrics, and the generated tokens charged to the key."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ragraph_client import logs
from ragraph_client.errors import ResourceExhausted, Unavailable

from .edge import Edge, code_name
from .telemetry import fail

log = logging.getLogger("ragraph.router.openai")


@dataclass
class NodeCall:
    span: Any  # the request's span, None when tracing is off
    tokens: int = 0  # tokens generated, charged to the key at the end


@asynccontextmanager
async def admitted(edge: Edge, headers: Mapping[str, str], method: str, request_id: str) -> AsyncIterator[NodeCall]:
    """Inside: a request let in past the key, the limits and readiness, counted when it ends."""
    started = time.perf_counter()
    logs.request_id.set(request_id)
    call = NodeCall(edge.tracing.start(method, headers=headers, attrs={"ragraph.request_id": request_id}))
    code, principal, running = "OK", None, False
    try:
        principal = edge.authenticate(headers)
        try:
            await edge.gate.admit(principal)
        except ResourceExhausted as exc:
            edge.metrics.rate_limited.labels(getattr(exc, "limit", "requests")).inc()
            raise
        service = edge.service
        if not service.ready:
            raise Unavailable(f"graph {service.graph.name} is not ready: {'; '.join(service.problems)}")
        edge._enter()
        running = True
        yield call
    except BaseException as exc:
        code = code_name(exc)
        if code == "INTERNAL":
            log.error("request %s failed with our bug", request_id, exc_info=exc)
        if call.span is not None:
            fail(call.span, exc)
        raise
    finally:
        if running:
            edge._leave()
        if principal is not None and call.tokens > 0:
            edge.metrics.completion_tokens.inc(call.tokens)
            await edge._charge(principal, call.tokens)
        edge.metrics.requests.labels(method, code).inc()
        edge.metrics.request_seconds.labels(method).observe(time.perf_counter() - started)
        if call.span is not None:
            call.span.end()
