"""The router's state: the graph, one client per node server, one store per URI, readiness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from ragraph_client.client import AsyncInferenceClient
from ragraph_client.errors import Unavailable
from ragraph_client.headers import service_token_headers
from ragraph_retrieval.store import VectorStore, open_store
from ragraph_retrieval.tokens import encoder_counter, prompt_counter

from . import contract
from .events import Event, RagRequest
from .executor import Executor
from .graph import Graph, load
from .nodes import CacheNode, ModelNode, RetrieverNode
from .settings import RouterSettings
from .telemetry import RouterMetrics, Tracing

log = logging.getLogger("ragraph.router")


class RouterService:
    def __init__(
        self,
        settings: RouterSettings,
        graph: Graph | None = None,
        metrics: RouterMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.graph = graph or load(settings.graph)
        # the request parameters some node takes (the others are refused: parameters.read)
        models = self.graph.of(ModelNode)
        self.forwarded = sorted({name for node in models for name in node.forward})
        urls = {n.target[0] for n in models} | {n.output_guard.url for n in models if n.output_guard}
        stores = {n.store for n in self.graph.of(RetrieverNode)} | {n.store for n in self.graph.of(CacheNode)}
        # MLServer 1.7.1 drops double_param: float parameters go to the nodes as strings.
        # Reconnect within ~2 s once a node is back (gRPC's default backoff grows to 120 s).
        reconnect = [
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.lb_policy_name", settings.node_lb_policy),
        ]
        # the nodes' shared service token (they check it when their service_token is set)
        node_headers = service_token_headers(settings.node_token)
        self.clients = {
            url: AsyncInferenceClient(url, float_params="string", channel_options=reconnect, headers=node_headers)
            for url in sorted(urls)
        }
        self.stores: dict[str, VectorStore] = {uri: open_store(uri) for uri in sorted(stores)}
        counter, _ = encoder_counter()
        self.executor = Executor(
            self.graph, self.clients, self.stores, prompt_counter(settings.prompt_encoding, counter), metrics, tracing
        )
        self.ready = False
        self.problems: list[str] = ["not checked yet"]
        self._logged: list[str] = []  # the problems last logged, so each new set is logged once
        self.degraded: list[str] = []  # optional nodes found down by the last check
        self._watch: asyncio.Task[None] | None = None

    async def check(self) -> list[str]:
        """Readiness: every required node answers and fits the graph. Optional nodes (on_error skip
        or default) that are down leave the router ready, with a warning."""
        timeout = max(0.5, min(5.0, self.settings.check_interval_s))
        self.problems, down = await contract.check_nodes(self.graph, self.clients, timeout)
        if self.problems and (self.ready or self.problems != self._logged):
            log.warning("router not ready: %s", "; ".join(self.problems))
            self._logged = list(self.problems)
        elif not self.problems and not self.ready:
            log.info("router ready: every required node of graph %s passed the contract check", self.graph.name)
        if down != self.degraded:
            if down:
                log.warning("serving without optional nodes: %s", "; ".join(down))
            self.degraded = down
        self.ready = not self.problems
        return self.problems

    async def watch(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - keep watching; log our bug
                log.exception("readiness check failed")
            await asyncio.sleep(self.settings.check_interval_s)

    def start(self) -> None:
        self._watch = asyncio.get_running_loop().create_task(self.watch())

    def deadline(self, remaining: float | None) -> float:
        budget = remaining if remaining is not None else self.settings.default_timeout_ms / 1000
        return time.monotonic() + budget

    def _require_ready(self) -> None:
        if not self.ready:
            raise Unavailable(f"graph {self.graph.name} is not ready: {'; '.join(self.problems)}")

    async def stream(self, request: RagRequest, remaining: float | None) -> AsyncIterator[Event]:
        self._require_ready()
        async for event in self.executor.run(request, self.deadline(remaining)):
            yield event

    async def close(self) -> None:
        if self._watch:
            self._watch.cancel()
        await self.executor.settle()  # cache writes under way finish before the stores close
        for client in self.clients.values():
            await client.close()
        for store in self.stores.values():
            store.close()
