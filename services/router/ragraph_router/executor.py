"""Running the graph for one request: walk from the entry node, run each node's handler under
its policy (share of the deadline, retries, on_error), and yield events as they happen: the
sources once retrieval is done, each text delta of the streaming node, and the final result."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from ragraph_client.client import AsyncInferenceClient
from ragraph_client.errors import RagraphError
from ragraph_retrieval.store import VectorStore
from ragraph_retrieval.tokens import TokenCounter

from .cache import SemanticCache
from .events import Event, FinalEvent, RagRequest
from .graph import Graph
from .handlers import Handlers, Step
from .nodes import ModelNode, RetrieverNode
from .policy import named
from .telemetry import RouterMetrics, Tracing, fail
from .values import NodeStatus, Values

log = logging.getLogger("ragraph.router")


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
        self.metrics = metrics
        self.tracing = tracing or Tracing(None)
        self.cache = SemanticCache.for_graph(graph, stores)
        self.handlers = Handlers(graph, clients, stores, counter, self.cache, metrics, self.tracing)

    async def run(self, request: RagRequest, deadline: float) -> AsyncIterator[Event]:
        values = Values.for_request(request.question, request.params)
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
                async with aclosing(self.handlers(node, Step(values, request, deadline, span))) as events:
                    async for event in events:
                        yield event
                status.status = "ok"
            except RagraphError as exc:
                status.error = f"{exc.code.name}: {exc.message}"
                if span is not None:
                    fail(span, exc)
                if node.on_error == "fail":
                    status.status = "failed"
                    raise type(exc)(named(node, exc.message), exc.code) from exc
                status.status = "skipped" if node.on_error == "skip" else "default"
                values.put_outputs(node.name, node.default)
                log.warning("node %s failed (%s), policy %s: going on", node.name, status.error, node.on_error)
            finally:
                status.ms = (time.perf_counter() - started) * 1000
                if status.status == "pending":  # the caller went away, or our own bug
                    status.status = "aborted"
                if self.metrics is not None and node.remote:
                    self.metrics.node_seconds.labels(name, status.status).observe(status.ms / 1000)
                if span is not None:
                    span.set_attribute("ragraph.node.status", status.status)
                    span.end()
            queue.extend(self.graph.next_nodes(node, values))
        final = self._final(values, request)
        if self.cache is not None:
            self.cache.store_answer(values, request.question, final, request.id)
        yield final

    async def settle(self) -> None:
        """Wait for the cache writes still under way (tests; before closing the stores)."""
        if self.cache is not None:
            await self.cache.settle()

    # --- the final event -----------------------------------------------------------------

    def _final(self, values: Values, request: RagRequest) -> FinalEvent:
        answer = values.answer
        sources = answer.get("sources") or []
        gen = self.graph.generator
        gen_params = values.parameters(gen.name) if gen else {}
        params: dict[str, Any] = {
            "prompt_tokens": int(gen_params.get("prompt_tokens", 0) or 0),
            "completion_tokens": int(gen_params.get("completion_tokens", 0) or 0),
            "ttft_ms": float(gen_params.get("ttft_ms", 0.0) or 0.0),
            "finish_reason": str(gen_params.get("finish_reason", "")),
            "nodes": json.dumps({k: v.as_json() for k, v in values.nodes.items()}),
            "flagged": values.flagged,
        }
        guarded = values.guarded(gen.name) if gen else None
        if guarded:
            params["output_guard"] = str(guarded)
        if self.cache is not None:
            self.cache.report(values, params)
        if request.debug:
            params["debug"] = json.dumps(self._trace(values, gen))
        log.debug("request %s: %s", request.id, params["nodes"])
        return FinalEvent(
            answer=str(answer.get("answer") or ""),
            sources=list(sources),
            label=str(answer.get("label") or ""),
            guard=str(answer.get("guard") or ""),
            parameters=params,
        )

    def _trace(self, values: Values, gen: ModelNode | None) -> dict[str, Any]:
        total_ms = (time.perf_counter() - values.started) * 1000
        retrievers = {n.name for n in self.graph.of(RetrieverNode)}
        found = (values.matches(name) for name in values.path if name in retrievers)
        matches = next((m for m in found if m is not None), None) or []
        gen_params = values.parameters(gen.name) if gen else {}
        completion = int(gen_params.get("completion_tokens", 0) or 0)
        gen_ms = values.nodes[gen.name].ms if gen and gen.name in values.nodes else 0.0
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
