"""Running the graph for one request: walk from the entry node, call each node under its
policy (share of the deadline, retries, on_error), and yield events as they happen: the sources
once retrieval is done, each text delta of the streaming node, and the final result."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from ragraph_client.client import AsyncInferenceClient
from ragraph_client.errors import DeadlineExceeded, RagraphError, Unavailable
from ragraph_client.logs import REQUEST_ID_HEADER
from ragraph_retrieval.store import VectorStore
from ragraph_retrieval.tokens import TokenCounter

from .cache import Entry, SemanticCache, Slot
from .events import DeltaEvent, Event, FinalEvent, RagRequest, SourcesEvent
from .graph import Graph, Node, OutputGuard, holds
from .prompt import PromptBuilder
from .telemetry import RouterMetrics, Tracing, fail
from .values import NodeStatus, Values, as_input

log = logging.getLogger("ragraph.router")
T = TypeVar("T")
_RETRYABLE = (Unavailable,)
_MAX_CACHE_WRITES = 64  # cache writes under way at once; past that an answer is not stored


class Executor:
    def __init__(
        self,
        graph: Graph,
        clients: Mapping[str, AsyncInferenceClient],
        stores: Mapping[str, VectorStore],
        counter: TokenCounter,
        metrics: RouterMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.graph = graph
        self.clients = clients
        self.stores = stores
        self.counter = counter
        self.metrics = metrics
        self.tracing = tracing or Tracing(None)
        self.cache = SemanticCache.for_graph(graph, stores)
        # Built once: a bad prompt parameter fails the router's start, naming it.
        self._prompts = {
            n.name: PromptBuilder.from_parameters(counter, n.parameters) for n in graph.nodes if n.combine == "prompt"
        }
        self._writes: set[asyncio.Task[None]] = set()  # cache writes under way, off the callers' path

    # --- policy ------------------------------------------------------------------------------

    async def _attempts(self, node: Node, values: Values, deadline: float, call: Callable[[float], Awaitable[T]]) -> T:
        """``call(timeout)`` under the node's deadline share and retries."""
        status = values.nodes
        for attempt in range(node.retries + 1):
            timeout = _share(node, deadline)
            status[node.name].attempts = attempt + 1
            try:
                return await asyncio.wait_for(call(timeout), timeout)
            except TimeoutError:
                error: RagraphError = DeadlineExceeded(f"node {node.name}: no answer within {timeout * 1000:.0f} ms")
            except RagraphError as exc:
                error = exc
            if attempt == node.retries or not isinstance(error, _RETRYABLE):
                raise error
            await asyncio.sleep(min(0.05 * 2**attempt, max(0.0, deadline - time.monotonic())))
        raise AssertionError("unreachable")

    # --- node kinds ----------------------------------------------------------------------------

    def _inputs(self, node: Node, values: Values) -> dict[str, Any]:
        out = {}
        for name, ref in node.inputs.items():
            value = values.get(ref)
            if value is None:
                raise Unavailable(f"node {node.name}: input {name!r} has no value ({ref} was not produced)")
            out[name] = value
        return out

    def _params(self, node: Node, request: RagRequest) -> dict[str, Any]:
        params = dict(node.parameters)
        for request_name, node_name in node.forward.items():
            if request_name in request.params:
                params[node_name] = request.params[request_name]
        return params

    async def _model(
        self, node: Node, values: Values, request: RagRequest, deadline: float, headers: dict[str, str]
    ) -> AsyncIterator[Event]:
        assert node.endpoint and node.endpoint.url and node.endpoint.model
        client, model = self.clients[node.endpoint.url], node.endpoint.model
        headers = {**node.endpoint.headers, **headers}  # the node's own metadata (e.g. seldon-model)
        inputs = {k: as_input(k, v) for k, v in self._inputs(node, values).items()}
        params = self._params(node, request)
        if not node.stream:
            response = await self._attempts(
                node,
                values,
                deadline,
                lambda t: client.infer(model, inputs, params, timeout=t, id=request.id, headers=headers),
            )
            values.put_response(node.name, response)
            return
        timeout = _share(node, deadline)
        values.nodes[node.name].attempts = 1
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
                    values.data[f"{node.name}.parameters"] = {
                        **values.data.get(f"{node.name}.parameters", {}),
                        **response.parameters,
                    }
                if guard and size - checked >= guard.every_chars:
                    checked = size
                    blocked = await self._output_guard(guard, "".join(parts), deadline, headers)
                    if blocked:
                        values.data[f"{node.name}.guarded"] = blocked
                        values.data[f"{node.name}.parameters"] = {
                            **values.data.get(f"{node.name}.parameters", {}),
                            "finish_reason": "guarded",
                        }
                        yield DeltaEvent(guard.message)
                        break
        finally:
            await stream.aclose()  # cancels the node's call when we stop early or are cancelled
        values.data[f"{node.name}.text"] = "".join(parts)

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

    def _vector(self, node: Node, values: Values) -> Any:
        """The node's ``vector`` input as one row (the encoder answers [1, D] for one text)."""
        vector = self._inputs(node, values)["vector"]
        return vector[0] if getattr(vector, "ndim", 1) == 2 else vector

    async def _retrieve(self, node: Node, values: Values, request: RagRequest, deadline: float) -> None:
        assert node.endpoint and node.endpoint.store
        store = self.stores[node.endpoint.store]
        vector = self._vector(node, values)
        top_k = request.top_k or int(node.parameters.get("top_k", 4))
        where = request.filter
        namespace = request.namespace if request.namespace is not None else node.parameters.get("namespace")
        matches = await self._attempts(
            node, values, deadline, lambda t: asyncio.to_thread(store.query, vector, top_k, where, namespace)
        )
        values.data[f"{node.name}.matches"] = matches

    async def _cache(self, node: Node, values: Values, request: RagRequest, deadline: float) -> list[Event]:
        """Look the question up in the semantic cache. A hit serves the stored answer as the
        stream would (sources, then the text) and the walk goes on at ``on_hit``; a miss leaves
        the slot the answer is stored in once the graph has made it."""
        cache = self.cache
        assert cache is not None
        vector = self._vector(node, values)
        key = cache.key(request.namespace, request.params, request.top_k, request.filter)
        namespace = cache.namespace(request.namespace)
        try:
            found = await self._attempts(
                node, values, deadline, lambda t: asyncio.to_thread(cache.lookup, vector, key, namespace)
            )
        except RagraphError:
            self._count_cache("error")
            raise
        self._count_cache(found.result)
        values.data[f"{node.name}.hit"] = found.entry is not None
        values.data[f"{node.name}.score"] = found.score
        if found.entry is None:
            values.data[f"{node.name}.slot"] = Slot(key, namespace, vector)
            return []
        entry = found.entry
        values.data[f"{node.name}.answer"] = entry.answer
        values.data[f"{node.name}.sources"] = entry.sources
        values.data[f"{node.name}.label"] = entry.label
        values.data[f"{node.name}.finish_reason"] = entry.finish_reason
        return [SourcesEvent(entry.sources), DeltaEvent(entry.answer)]

    def _count_cache(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache.labels(result).inc()

    def _combine(self, node: Node, values: Values) -> list[Event]:
        if node.combine == "refusal":
            text = str(node.parameters.get("text", "I can't help with that."))
            values.data[f"{node.name}.text"] = text
            values.data[f"{node.name}.sources"] = []
            return [SourcesEvent([]), DeltaEvent(text)]  # a stream still sees sources -> text -> final
        if node.combine == "prompt":
            builder = self._prompts[node.name]
            inputs = self._inputs(node, values)
            prompt = builder.build(inputs["question"], inputs["matches"])
            values.data[f"{node.name}.messages"] = json.dumps(prompt.messages)
            values.data[f"{node.name}.sources"] = prompt.sources
            values.data[f"{node.name}.tokens"] = prompt.tokens
            return [SourcesEvent(prompt.sources)]
        refs = node.inputs
        values.data["answer"] = {name: values.get(ref) for name, ref in refs.items()}
        return []

    # --- the walk ----------------------------------------------------------------------------

    def _route(self, node: Node, values: Values) -> str:
        for condition in node.conditions:
            if all(holds(values.get(ref), spec) for ref, spec in condition.when.items()):
                return condition.goto
        if node.default_child is None:
            raise Unavailable(f"node {node.name}: no condition matched and no default route")
        return node.default_child

    async def run(self, request: RagRequest, deadline: float) -> AsyncIterator[Event]:
        values = Values()
        values.data["request.question"] = request.question
        for key, value in request.params.items():
            values.data[f"request.{key}"] = value
        queue = [self.graph.entry.name]
        seen: set[str] = set()
        while queue:
            name = queue.pop(0)
            if name in seen:
                continue
            seen.add(name)
            node = self.graph.node(name)
            values.path.append(name)
            status = values.nodes.setdefault(name, NodeStatus())
            started = time.perf_counter()
            span = self.tracing.start(
                f"node {name}", request.trace, attrs={"ragraph.node": name, "ragraph.node.type": node.type}
            )
            try:
                if node.type == "MODEL":
                    headers = self.tracing.inject(span, {REQUEST_ID_HEADER: request.id})
                    async for event in self._model(node, values, request, deadline, headers):
                        yield event
                elif node.type == "RETRIEVER":
                    await self._retrieve(node, values, request, deadline)
                elif node.type == "COMBINER":
                    for combined in self._combine(node, values):
                        yield combined
                elif node.type == "CACHE":
                    for served in await self._cache(node, values, request, deadline):
                        yield served
                status.status = "ok"
            except RagraphError as exc:
                status.error = f"{exc.code.name}: {exc.message}"
                if span is not None:
                    fail(span, exc)
                if node.on_error == "fail":
                    status.status = "failed"
                    raise type(exc)(_named(node, exc.message), exc.code) from exc
                status.status = "skipped" if node.on_error == "skip" else "default"
                for key, value in node.default.items():
                    values.data[f"{node.name}.{key}"] = value
                log.warning("node %s failed (%s), policy %s: going on", node.name, status.error, node.on_error)
            finally:
                status.ms = (time.perf_counter() - started) * 1000
                if status.status == "pending":  # the caller went away, or our own bug
                    status.status = "aborted"
                if self.metrics is not None and node.type in ("MODEL", "RETRIEVER", "CACHE"):
                    self.metrics.node_seconds.labels(name, status.status).observe(status.ms / 1000)
                if span is not None:
                    span.set_attribute("ragraph.node.status", status.status)
                    span.end()
            queue.extend(self._next(node, values))
        final = self._final(values, request)
        self._store_answer(values, request, final)
        yield final

    def _next(self, node: Node, values: Values) -> list[str]:
        if node.type == "ROUTER":
            return [self._route(node, values)]
        if node.type == "CACHE" and node.on_hit and values.data.get(f"{node.name}.hit"):
            return [node.on_hit]  # the nodes between the cache and on_hit are skipped
        return node.children

    # --- the semantic cache's writes -----------------------------------------------------------

    def _store_answer(self, values: Values, request: RagRequest, final: FinalEvent) -> None:
        """After a miss, store the answer when it is one worth serving again; the write runs in a
        thread and the final event goes out without waiting for it."""
        if self.cache is None:
            return
        slot = values.data.get(f"{self.cache.node.name}.slot")
        reason = self._finish_reason(values, final)
        if not isinstance(slot, Slot) or not self._cacheable(values, final, reason):
            return
        if len(self._writes) >= _MAX_CACHE_WRITES:  # a slow store: shed writes, not the thread pool
            log.warning("cache: %d writes under way, answer to request %s not stored", len(self._writes), request.id)
            return
        entry = Entry(request.question, final.answer, final.sources, final.label, reason)
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.cache.save, slot, entry))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _cacheable(self, values: Values, final: FinalEvent, reason: str) -> bool:
        """A normal answer: finished (stop or length), no node failed, skipped or defaulted, not
        stopped by the output guard, not a refusal, not empty."""
        if values.flagged or "output_guard" in final.parameters or not final.answer.strip():
            return False
        if any(self.graph.node(name).combine == "refusal" for name in values.path):
            return False
        return reason in ("stop", "length")

    @staticmethod
    def _finish_reason(values: Values, final: FinalEvent) -> str:
        """The streaming node's finish_reason, else the last one a node on the path reported."""
        if final.parameters.get("finish_reason"):
            return str(final.parameters["finish_reason"])
        for name in reversed(values.path):
            params = values.data.get(f"{name}.parameters")
            if isinstance(params, dict) and params.get("finish_reason"):
                return str(params["finish_reason"])
        return ""

    async def settle(self) -> None:
        """Wait for the cache writes still under way (tests; before closing the stores)."""
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    def _final(self, values: Values, request: RagRequest) -> FinalEvent:
        answer = values.data.get("answer", {})
        sources = answer.get("sources") or []
        gen = next((n for n in self.graph.nodes if n.stream), None)
        gen_params = values.data.get(f"{gen.name}.parameters", {}) if gen else {}
        params: dict[str, Any] = {
            "prompt_tokens": int(gen_params.get("prompt_tokens", 0) or 0),
            "completion_tokens": int(gen_params.get("completion_tokens", 0) or 0),
            "ttft_ms": float(gen_params.get("ttft_ms", 0.0) or 0.0),
            "finish_reason": str(gen_params.get("finish_reason", "")),
            "nodes": json.dumps({k: v.as_json() for k, v in values.nodes.items()}),
            "flagged": values.flagged,
        }
        guarded = values.data.get(f"{gen.name}.guarded") if gen else None
        if guarded:
            params["output_guard"] = str(guarded)
        if self.cache is not None:
            self._cache_params(values, params)
        if request.debug:
            params["debug"] = json.dumps(self._trace(values, gen.name if gen else None))
        log.debug("request %s: %s", request.id, params["nodes"])
        return FinalEvent(
            answer=str(answer.get("answer") or ""),
            sources=list(sources),
            label=str(answer.get("label") or ""),
            guard=str(answer.get("guard") or ""),
            parameters=params,
        )

    def _cache_params(self, values: Values, params: dict[str, Any]) -> None:
        """``cached``, and ``cache_score``: the hit's similarity, or on a miss the best one under
        the same key when there was one. A hit reports the stored answer's finish_reason."""
        assert self.cache is not None
        name = self.cache.node.name
        params["cached"] = bool(values.data.get(f"{name}.hit"))
        score = values.data.get(f"{name}.score")
        if score is not None:
            params["cache_score"] = round(float(score), 4)
        if params["cached"]:
            params["finish_reason"] = str(values.data.get(f"{name}.finish_reason") or params["finish_reason"])

    def _trace(self, values: Values, gen: str | None) -> dict[str, Any]:
        total_ms = (time.perf_counter() - values.started) * 1000
        matches: list[Any] = next((v for k, v in values.data.items() if k.endswith(".matches")), []) or []
        gen_params = values.data.get(f"{gen}.parameters", {}) if gen else {}
        completion = int(gen_params.get("completion_tokens", 0) or 0)
        gen_ms = values.nodes[gen].ms if gen and gen in values.nodes else 0.0
        return {
            "path": values.path,
            "nodes": {k: v.as_json() for k, v in values.nodes.items()},
            "retrieved": [
                {"id": m.id, "doc_id": m.metadata.get("doc_id"), "score": round(m.score, 4)} for m in matches
            ],
            "ttft_ms": float(gen_params["ttft_ms"]) if gen_params.get("ttft_ms") is not None else None,
            "tokens_per_s": round(completion / (gen_ms / 1000), 1) if gen_ms > 0 and completion else None,
            "total_ms": round(total_ms, 2),
        }


def _share(node: Node, deadline: float) -> float:
    """Seconds this node may take: what is left of the request, capped by its ``timeout_ms``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0.001:
        raise DeadlineExceeded(f"node {node.name}: the request deadline expired before it could run")
    return min(remaining, node.timeout_ms / 1000) if node.timeout_ms else remaining


def _named(node: Node, message: str) -> str:
    """The message with the node's name and endpoint in front (once)."""
    prefix = f"node {node.name}"
    rest = message[len(prefix) :].lstrip(":").lstrip() if message.startswith(prefix) else message
    endpoint = node.endpoint
    if endpoint and endpoint.model and endpoint.url:
        return f"{prefix} ({endpoint.model}@{endpoint.url}): {rest}"
    if endpoint and endpoint.store:
        return f"{prefix} ({endpoint.store}): {rest}"
    return f"{prefix}: {rest}"
