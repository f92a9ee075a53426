"""The router reaches models that sit behind a mesh routing by the ``seldon-model`` header, as
Seldon Core 2's Envoy does: the graph's per-node ``headers`` go with every call of that node (the
contract check's ModelReady and ModelMetadata, ModelInfer, ModelStreamInfer), and a node sent
without its header is not found. Readiness ignores optional nodes (on_error: skip) that are down,
and ``ragraph graph check`` still names them.

The mesh here is a small gRPC proxy in the test process: it forwards each call's bytes and
metadata to the real encoder or llm named by the call's ``seldon-model`` header, answers
NOT_FOUND for a missing or unknown one, and records what it saw."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from ragraph_client.client import InferenceClient

from tests.fixtures.servers import REPO, Service, free_port, start_router, wait_for

SHIPPED = REPO / "services" / "router" / "ragraph_router" / "graphs" / "rag.yaml"
STREAMING = {"/inference.GRPCInferenceService/ModelStreamInfer"}
QUESTION = "How often should the espresso machine be descaled?"


class Mesh(grpc.GenericRpcHandler):
    def __init__(self, routes: dict[str, str]) -> None:
        self.channels = {name: grpc.insecure_channel(url) for name, url in routes.items()}
        self.seen: list[tuple[str, str | None]] = []  # (method, seldon-model)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((self,))
        self.port = free_port()
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        metadata = [(k, v) for k, v in details.invocation_metadata if not k.startswith((":", "grpc-", "user-agent"))]
        model = next((v for k, v in metadata if k == "seldon-model"), None)
        self.seen.append((method.rsplit("/", 1)[-1], model))
        channel = self.channels.get(model or "")

        def refuse(context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no route for seldon-model {model!r}")

        if method in STREAMING:

            def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
                if channel is None:
                    refuse(context)
                call = channel.stream_stream(method)  # type: ignore[union-attr]
                yield from call(requests, metadata=metadata, timeout=context.time_remaining())

            return grpc.stream_stream_rpc_method_handler(stream)

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            if channel is None:
                refuse(context)
            call = channel.unary_unary(method)  # type: ignore[union-attr]
            try:
                return call(request, metadata=metadata, timeout=context.time_remaining())  # type: ignore[no-any-return]
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())
                raise

        return grpc.unary_unary_rpc_method_handler(unary)

    def stop(self) -> None:
        self.server.stop(None)
        for channel in self.channels.values():
            channel.close()


@pytest.fixture(scope="module")
def mesh(encoder_service: Service, llm_service: Service) -> Iterator[Mesh]:
    running = Mesh(
        {"encoder": encoder_service.grpc_url, "classifier": encoder_service.grpc_url, "llm": llm_service.grpc_url}
    )
    yield running
    running.stop()


def _graph(tmp: Path, mesh: Mesh, headers: dict[str, dict[str, str] | None]) -> Path:
    """The shipped graph with its MODEL nodes behind the mesh, each with ``headers[node]`` (None: none)."""
    graph = yaml.safe_load(SHIPPED.read_text())
    for node in graph["nodes"]:
        if node["type"] == "MODEL":
            node["endpoint"]["url"] = mesh.url
            if headers.get(node["name"]) is not None:
                node["endpoint"]["headers"] = headers[node["name"]]
    path = tmp / "graph.yaml"
    path.write_text(yaml.safe_dump(graph))
    return path


HEADERS: dict[str, Any] = {
    "guard": {"seldon-model": "classifier"},
    "encode": {"seldon-model": "encoder"},
    "generate": {"seldon-model": "llm"},
    "classify": {"seldon-model": "classifier"},
}


def test_each_node_call_carries_its_headers_through_the_mesh(tmp_path: Path, mesh: Mesh, store_uri: str) -> None:
    router = start_router(tmp_path / "router.log", {"RAGRAPH_STORE": store_uri}, _graph(tmp_path, mesh, HEADERS))
    try:
        at_start = set(mesh.seen)  # the contract check the router ran before it was ready
        mesh.seen.clear()
        with InferenceClient(router.grpc_url, timeout=120) as client:
            parts = list(client.stream("rag", {"question": [QUESTION]}, {"max_tokens": 8}))
        assert len(parts) > 2 and parts[-1].parameters["triton_final_response"] is True
        calls = set(mesh.seen)
        assert {("ModelInfer", "classifier"), ("ModelInfer", "encoder"), ("ModelStreamInfer", "llm")} <= calls
        assert all(model is not None for _, model in mesh.seen), mesh.seen
    finally:
        router.stop()
    # the contract check went through the mesh with the headers too
    assert {("ModelMetadata", "llm"), ("ModelReady", "encoder")} <= at_start


def test_a_required_node_without_its_header_keeps_the_router_unready(
    tmp_path: Path, mesh: Mesh, store_uri: str
) -> None:
    graph = _graph(tmp_path, mesh, {**HEADERS, "encode": None})
    router = start_router(tmp_path / "router.log", {"RAGRAPH_STORE": store_uri}, graph, wait_ready=False)
    try:
        wait_for(lambda: "router not ready" in router.log(), timeout=30)
        with InferenceClient(router.grpc_url, timeout=10) as client:
            assert not client.ready()
        expected = f"node encode: encoder@{mesh.url} unreachable (NOT_FOUND: no route for seldon-model None)"
        assert expected in router.log()
    finally:
        router.stop()


def test_an_optional_node_down_leaves_the_router_ready(tmp_path: Path, mesh: Mesh, store_uri: str) -> None:
    # classify (on_error: skip) is routed to a model the mesh does not know; guard, the same
    # classifier but required, is routed right
    graph = _graph(tmp_path, mesh, {**HEADERS, "classify": {"seldon-model": "classifier-gone"}})
    assert yaml.safe_load(graph.read_text())["nodes"][-2]["on_error"] == "skip"
    router = start_router(tmp_path / "router.log", {"RAGRAPH_STORE": store_uri}, graph)
    try:
        with InferenceClient(router.grpc_url, timeout=120) as client:
            assert client.ready()
            reply = client.infer("rag", {"question": [QUESTION]}, {"max_tokens": 6})
        assert reply.output("answer").as_strings()[0]
        expected = (
            f"node classify: classifier@{mesh.url} unreachable (NOT_FOUND: no route for seldon-model "
            "'classifier-gone') (optional, on_error: skip)"
        )
        assert f"serving without optional nodes: {expected}" in router.log()
        # graph check on demand still names it
        done = subprocess.run(
            [sys.executable, "-m", "ragraph_cli.main", "graph", "check", str(graph)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env={**os.environ, "RAGRAPH_STORE": store_uri, "HF_HUB_OFFLINE": "1"},
        )
        assert done.returncode == 1 and expected in done.stdout, done.stdout + done.stderr
    finally:
        router.stop()


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (
            {"Seldon-Model": "llm"},
            "header 'Seldon-Model': a name is lowercase letters, digits, '-', '_', '.', not grpc-*/*-bin",
        ),
        ({"grpc-timeout": "1S"}, "header 'grpc-timeout': a name is lowercase letters"),
        ({"x-ragraph-service-token": "t"}, "header 'x-ragraph-service-token' is set by the router itself"),
        ({"seldon-model": "llm\n"}, "header 'seldon-model': the value must be printable text"),
    ],
)
def test_bad_node_headers_are_refused_when_the_graph_loads(headers: dict[str, str], message: str) -> None:
    from ragraph_router.graph import GraphError, parse

    graph = yaml.safe_load(SHIPPED.read_text())
    graph["nodes"][-3]["endpoint"]["headers"] = headers  # generate
    with pytest.raises(GraphError) as info:
        parse(yaml.safe_dump(graph))
    assert "nodes.6.endpoint.headers" in str(info.value) and message in str(info.value), str(info.value)
