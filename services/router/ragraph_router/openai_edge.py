"""What the :class:`Edge` does around a graph run, for the OpenAI-compatible API's calls that go
to one node instead (the ``llm`` model, embeddings): the key, the rate limits, readiness, the
in-flight limit, a trace span, the request metrics, and the generated tokens charged to the key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from ragraph_client.errors import Unavailable

from .edge import Call, Edge


@asynccontextmanager
async def admitted(edge: Edge, headers: Mapping[str, str], method: str, request_id: str) -> AsyncIterator[Call]:
    """Inside: a request let in past the key, the limits and readiness, counted when it ends;
    the tokens the body leaves in ``call.tokens`` are counted as generated and charged to the key."""
    async with edge.call(request_id, headers, method) as call:
        call.principal = await edge.admit(headers)
        service = edge.service
        if not service.ready:
            raise Unavailable(f"graph {service.graph.name} is not ready: {'; '.join(service.problems)}")
        async with edge.slot():
            try:
                yield call
            finally:
                if call.tokens > 0:
                    edge.metrics.completion_tokens.inc(call.tokens)
