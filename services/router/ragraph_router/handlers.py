"""What each node type does when the walk reaches it, one handler per type (:attr:`Handlers.table`).

A handler reads the node's inputs from the run's values, calls what the node stands for under
its policy (:mod:`.policy`), stores its outputs, and yields the events the caller sees on the
way: the sources once they are known, each text delta of the streaming node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ragraph_client.client import AsyncInferenceClient
from ragraph_client.errors import RagraphError, Unavailable
from ragraph_client.headers import REQUEST_ID_HEADER
from ragraph_retrieval.store import VectorStore
from ragraph_retrieval.tokens import TokenCounter

from .cache import SemanticCache, Slot
from .events import DeltaEvent, Event, RagRequest, SourcesEvent
from .graph import Graph
from .node_parts import OutputGuard
from .nodes import CacheNode, CombinerNode, ModelNode, NodeBase, RetrieverNode, RouterNode
from .policy import attempts, share
from .prompt import PromptBuilder
from .telemetry import RouterMetrics, Tracing
from .values import Values, as_input

N = TypeVar("N", bound=NodeBase)
Handler = Callable[[Any, "Step"], AsyncGenerator[Event, None]]


@dataclass
class Step:
    """One node's turn in one run: the run's values, the request, its deadline, the node's span."""

    values: Values
    request: RagRequest
    deadline: float
    span: Any = None


def inputs_of(node: NodeBase, values: Values) -> dict[str, Any]:
    """The node's inputs by name; UNAVAILABLE naming the first one no node produced."""
    out = {}
    for name, ref in node.inputs.items():
        value = values.get(ref)
        if value is None:
            raise Unavailable(f"node {node.name}: input {name!r} has no value ({ref} was not produced)")
        out[name] = value
    return out


def node_params(node: ModelNode, request: RagRequest) -> dict[str, Any]:
    """The node's own parameters, overridden by the request's it forwards (under the node's names)."""
    params = dict(node.parameters)
    for request_name, node_name in node.forward.items():
        if request_name in request.params:
            params[node_name] = request.params[request_name]
    return params


def _vector(node: NodeBase, values: Values) -> Any:
    """The node's ``vector`` input as one row (the encoder answers [1, D] for one text)."""
    vector = inputs_of(node, values)["vector"]
    return vector[0] if getattr(vector, "ndim", 1) == 2 else vector


def _listed(handler: Callable[[N, Step], Awaitable[list[Event]]]) -> Callable[[N, Step], AsyncGenerator[Event, None]]:
    """A handler that makes its events at once, as one that yields them."""

    async def events(node: N, step: Step) -> AsyncGenerator[Event, None]:
        for event in await handler(node, step):
            yield event

    return events


class Handlers:
    def __init__(
        self,
        graph: Graph,
        clients: Mapping[str, AsyncInferenceClient],
        stores: Mapping[str, VectorStore],
        counter: TokenCounter,
        cache: SemanticCache | None,
        metrics: RouterMetrics | None,
        tracing: Tracing,
    ) -> None:
        self.clients = clients
        self.stores = stores
        self.cache = cache
        self.metrics = metrics
        self.tracing = tracing
        # Built once: a bad prompt parameter fails the router's start, naming it.
        self.prompts = {
            n.name: PromptBuilder.from_parameters(counter, n.parameters)
            for n in graph.of(CombinerNode)
            if n.combine == "prompt"
        }
        self.table: dict[type[NodeBase], Handler] = {
            ModelNode: self.model,
            RetrieverNode: _listed(self.retrieve),
            RouterNode: _listed(self.route),
            CombinerNode: _listed(self.combine),
            CacheNode: _listed(self.look_up),
        }

    def __call__(self, node: NodeBase, step: Step) -> AsyncGenerator[Event, None]:
        return self.table[type(node)](node, step)

    # --- MODEL ---------------------------------------------------------------------------

    async def model(self, node: ModelNode, step: Step) -> AsyncGenerator[Event, None]:
        values, request, deadline = step.values, step.request, step.deadline
        url, model = node.target
        client = self.clients[url]
        headers = self.tracing.inject(step.span, {REQUEST_ID_HEADER: request.id})
        assert node.endpoint
        headers = {**node.endpoint.headers, **headers}  # the node's own metadata (e.g. seldon-model)
        inputs = {k: as_input(k, v) for k, v in inputs_of(node, values).items()}
        params = node_params(node, request)
        status = values.nodes[node.name]
        if not node.stream:
            response = await attempts(
                node,
                status,
                deadline,
                lambda t: client.infer(model, inputs, params, timeout=t, id=request.id, headers=headers),
            )
            values.put_response(node.name, response)
            return
        timeout = share(node, deadline)
        status.attempts = 1
        parts: list[str] = []
        guard = node.output_guard
        size = checked = 0
        stream = client.stream(model, inputs, params, style=node.stream_style, timeout=timeout, headers=headers)
        try:
            async for response in stream:
                for tensor in response.outputs:
                    if tensor.datatype == "BYTES":
                        delta = "".join(tensor.as_strings())
                        if delta:
                            parts.append(delta)
                            size += len(delta)
                            yield DeltaEvent(delta)
                if response.parameters:
                    values.add_parameters(node.name, dict(response.parameters))
                if guard and size - checked >= guard.every_chars:
                    checked = size
                    blocked = await self._output_guard(guard, "".join(parts), deadline, headers)
                    if blocked:
                        values.put_guarded(node.name, blocked)
                        yield DeltaEvent(guard.message)
                        break
        finally:
            await stream.aclose()  # cancels the node's call when we stop early or are cancelled
        values.put_text(node.name, "".join(parts))

    async def _output_guard(
        self, guard: OutputGuard, text: str, deadline: float, headers: dict[str, str]
    ) -> str | None:
        """The blocked label when the answer's tail is blocked, else None."""
        client = self.clients[guard.url]
        window = text[-guard.window_chars :]
        timeout = max(0.001, deadline - time.monotonic())
        params = {"labelset": guard.labelset}
        headers = {**guard.headers, **headers}
        reply = await client.infer(guard.model, {"text": [window]}, params, timeout=timeout, headers=headers)
        label = reply.output("label").as_strings()[0]
        score = float(reply.output("score").as_numpy().reshape(-1)[0])
        return label if label in guard.block_labels and score >= guard.threshold else None

    # --- RETRIEVER, ROUTER, COMBINER -----------------------------------------------------

    async def retrieve(self, node: RetrieverNode, step: Step) -> list[Event]:
        request = step.request
        store = self.stores[node.store]
        vector = _vector(node, step.values)
        top_k = request.top_k or int(node.parameters.get("top_k", 4))
        where = request.filter
        namespace = request.namespace if request.namespace is not None else node.parameters.get("namespace")
        matches = await attempts(
            node,
            step.values.nodes[node.name],
            step.deadline,
            lambda t: asyncio.to_thread(store.query, vector, top_k, where, namespace),
        )
        step.values.put_matches(node.name, matches)
        return []

    async def route(self, node: RouterNode, step: Step) -> list[Event]:
        return []  # the route is the walk's to take (Graph.next_nodes), once the node is done

    async def combine(self, node: CombinerNode, step: Step) -> list[Event]:
        values = step.values
        if node.combine == "refusal":
            text = str(node.parameters.get("text", "I can't help with that."))
            values.put_refusal(node.name, text)
            return [SourcesEvent([]), DeltaEvent(text)]  # a stream still sees sources -> text -> final
        if node.combine == "prompt":
            inputs = inputs_of(node, values)
            prompt = self.prompts[node.name].build(inputs["question"], inputs["matches"])
            values.put_prompt(node.name, prompt)
            return [SourcesEvent(prompt.sources)]
        values.answer = {name: values.get(ref) for name, ref in node.inputs.items()}
        return []

    # --- CACHE ---------------------------------------------------------------------------

    async def look_up(self, node: CacheNode, step: Step) -> list[Event]:
        """Look the question up in the semantic cache. A hit serves the stored answer as the
        stream would (sources, then the text) and the walk goes on at ``on_hit``; a miss leaves
        the slot the answer is stored in once the graph has made it."""
        cache, values, request = self.cache, step.values, step.request
        assert cache is not None
        vector = _vector(node, values)
        key = cache.key(request.namespace, request.params, request.top_k, request.filter)
        namespace = cache.namespace(request.namespace)
        try:
            found = await attempts(
                node,
                values.nodes[node.name],
                step.deadline,
                lambda t: asyncio.to_thread(cache.lookup, vector, key, namespace),
            )
        except RagraphError:
            self._count_cache("error")
            raise
        self._count_cache(found.result)
        values.put_lookup(node.name, found.entry is not None, found.score)
        if found.entry is None:
            values.put_slot(node.name, Slot(key, namespace, vector))
            return []
        values.put_entry(node.name, found.entry)
        return [SourcesEvent(found.entry.sources), DeltaEvent(found.entry.answer)]

    def _count_cache(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache.labels(result).inc()
