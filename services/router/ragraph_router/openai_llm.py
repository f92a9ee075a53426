"""The graph's LLM on its own, as the OpenAI-compatible API's ``llm`` model: the caller's whole
message list goes to the node of the graph's streaming step (``generate`` in the shipped graphs)
as its ``messages`` input, with the node's own parameters and the request's generation
parameters under the node's ``forward:`` names. Around the call, what the :class:`Edge` does
for a graph run: key, rate limits, the in-flight limit, tracing, request metrics, and the
generated tokens charged to the key."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from ragraph_client import logs
from ragraph_client.errors import ResourceExhausted, Unavailable

from . import parameters
from .edge import Edge, code_name
from .events import DeltaEvent, Event, FinalEvent
from .graph import Node
from .openai_io import GRAPH_FIELDS, BadField, ChatRequest
from .telemetry import fail

log = logging.getLogger("ragraph.router.openai")
NAME = "llm"


class LlmModel:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.node: Node | None = next((n for n in edge.service.graph.nodes if n.stream), None)

    @property
    def names(self) -> list[str]:
        """``llm``, and the LLM's model name on its node when that differs; none without a streaming node."""
        node = self.node
        if node is None or node.endpoint is None or not node.endpoint.model:
            return []
        return sorted({NAME, node.endpoint.model} - {self.edge.model})

    def _params(self, chat: ChatRequest, node: Node) -> dict[str, Any]:
        """The node's parameters, then the request's under the node's names (checked as the rag model checks them)."""
        for name in GRAPH_FIELDS:
            if name in chat.params:
                raise BadField(name, f"'{name}' is a parameter of the graph models; model '{chat.model}' takes none")
        forwarded = parameters.read(chat.params, node.forward, self.edge.service.settings.max_top_k).forwarded
        return {**node.parameters, **{node.forward[name]: value for name, value in forwarded.items()}}

    async def events(
        self, chat: ChatRequest, request_id: str, headers: Mapping[str, str], method: str
    ) -> AsyncGenerator[Event, None]:
        """A delta per text piece, then the final event with the LLM's parameters (tokens, finish_reason)."""
        edge, node = self.edge, self.node
        assert node is not None and node.endpoint is not None and node.endpoint.url and node.endpoint.model
        started = time.perf_counter()
        logs.request_id.set(request_id)
        span = edge.tracing.start(f"{NAME} {method}", headers=headers, attrs={"ragraph.request_id": request_id})
        code, principal, running, deltas, tokens = "OK", None, False, 0, 0
        try:
            principal = edge.authenticate(headers)
            try:
                await edge.gate.admit(principal)
            except ResourceExhausted as exc:
                edge.metrics.rate_limited.labels(getattr(exc, "limit", "requests")).inc()
                raise
            params = self._params(chat, node)
            if not edge.service.ready:
                raise Unavailable(f"graph {edge.service.graph.name} is not ready: {'; '.join(edge.service.problems)}")
            edge._enter()
            running = True
            client = edge.service.clients[node.endpoint.url]
            call_headers = edge.tracing.inject(span, {**node.endpoint.headers, logs.REQUEST_ID_HEADER: request_id})
            timeout = (node.timeout_ms or edge.service.settings.default_timeout_ms) / 1000
            inputs = {"messages": [json.dumps(chat.messages, ensure_ascii=False)]}
            final: dict[str, Any] = {}
            stream = client.stream(
                node.endpoint.model, inputs, params, style=node.stream_style, timeout=timeout, headers=call_headers
            )
            try:
                async for response in stream:
                    text = "".join(s for t in response.outputs if t.datatype == "BYTES" for s in t.as_strings())
                    if text:
                        deltas += 1
                        yield DeltaEvent(text)
                    final.update(response.parameters)
            finally:
                await stream.aclose()
            tokens = int(final.get("completion_tokens", 0) or 0)
            yield FinalEvent("", [], "", "", final)
        except BaseException as exc:
            code = code_name(exc)
            if code == "INTERNAL":
                log.error("request %s failed with our bug", request_id, exc_info=exc)
            if span is not None:
                fail(span, exc)
            raise
        finally:
            if running:
                edge._leave()
            charge = tokens or deltas  # a stream cut short: each delta is at least one token
            if principal is not None and charge:
                edge.metrics.completion_tokens.inc(charge)
                await edge._charge(principal, charge)
            edge.metrics.requests.labels(method, code).inc()
            edge.metrics.request_seconds.labels(method).observe(time.perf_counter() - started)
            if span is not None:
                span.end()
