"""The graph's LLM on its own, as the OpenAI-compatible API's ``llm`` model: the caller's whole
message list goes to the node of the graph's streaming step (``generate`` in the shipped graphs)
as its ``messages`` input, with the node's own parameters and the request's generation
parameters under the node's ``forward:`` names, admitted and counted as a graph run is
(``openai_edge``)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from ragraph_client.headers import REQUEST_ID_HEADER

from . import parameters
from .edge import Edge
from .events import DeltaEvent, Event, FinalEvent
from .nodes import ModelNode
from .openai_edge import admitted
from .openai_io import GRAPH_FIELDS, BadField, ChatRequest

NAME = "llm"


class LlmModel:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.node: ModelNode | None = edge.service.graph.generator

    @property
    def names(self) -> list[str]:
        """``llm``, and the LLM's model name on its node when that differs; none without a streaming node."""
        node = self.node
        if node is None or node.endpoint is None or not node.endpoint.model:
            return []
        return sorted({NAME, node.endpoint.model} - {self.edge.model})

    def _params(self, chat: ChatRequest, node: ModelNode) -> dict[str, Any]:
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
        async with admitted(edge, headers, method, request_id) as call:
            params = self._params(chat, node)
            client = edge.service.clients[node.endpoint.url]
            call_headers = edge.tracing.inject(call.span, {**node.endpoint.headers, REQUEST_ID_HEADER: request_id})
            timeout = (node.timeout_ms or edge.service.settings.default_timeout_ms) / 1000
            if chat.prompt is not None:  # /v1/completions: the prompt as given, no chat template
                inputs = {"prompt": [chat.prompt]}
            else:
                inputs = {"messages": [json.dumps(chat.messages, ensure_ascii=False)]}
            final: dict[str, Any] = {}
            stream = client.stream(
                node.endpoint.model, inputs, params, style=node.stream_style, timeout=timeout, headers=call_headers
            )
            try:
                async for response in stream:
                    text = "".join(s for t in response.outputs if t.datatype == "BYTES" for s in t.as_strings())
                    if text:
                        call.tokens += 1  # a stream cut short: each delta is at least one token
                        yield DeltaEvent(text)
                    final.update(response.parameters)
            finally:
                await stream.aclose()
            call.tokens = int(final.get("completion_tokens", 0) or 0) or call.tokens
            yield FinalEvent("", [], "", "", final)
