"""OpenTelemetry through the real graph, in process (the router never imports MLServer, so it
can run here against the encoder and tiny-LLM subprocesses): one span for the request, one child
per node, the caller's trace continued, ``traceparent`` + ``x-request-id`` sent to every node;
with tracing off, no spans and no trace headers at all."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from ragraph_client.client import make_request

from tests.fixtures.servers import Service

QUESTION = "For how many months do we keep the first-of-month copies of the ledger database?"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_PARENT = "b7ad6b7169203331"


@pytest.fixture()
def graph_env(encoder_service: Service, llm_service: Service, store_uri: str) -> Iterator[None]:
    env = {
        "RAGRAPH_ENCODER_URL": encoder_service.grpc_url,
        "RAGRAPH_LLM_URL": llm_service.grpc_url,
        "RAGRAPH_STORE": store_uri,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


async def _ask(tracer: Any, headers: dict[str, str]) -> tuple[Any, list[dict[str, str]]]:
    from ragraph_router.access.gate import Gate
    from ragraph_router.edge import Edge
    from ragraph_router.service import RouterService
    from ragraph_router.settings import RouterSettings
    from ragraph_router.telemetry import RouterMetrics, Tracing

    settings = RouterSettings()
    metrics, tracing = RouterMetrics(), Tracing(tracer)
    service = RouterService(settings, None, metrics, tracing)
    sent: list[dict[str, str]] = []
    for client in service.clients.values():  # spy on what the real clients send, then call through
        for name in ("infer", "stream"):
            real = getattr(client, name)

            def spy(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
                sent.append(dict(kwargs.get("headers") or {}))
                return _real(*args, **kwargs)

            setattr(client, name, spy)
    edge = Edge(service, Gate.from_settings(settings), metrics, tracing)
    try:
        assert not await service.check(), service.problems
        request = make_request("rag", {"question": [QUESTION]}, {"max_tokens": 4, "temperature": 0.0}, id="req-42")
        response = await edge.infer(request, headers, 60.0, "ModelInfer")
    finally:
        await edge.close()
        await service.close()
    return response, sent


def test_one_request_span_with_a_child_per_node(graph_env: None) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caller = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_PARENT}-01"}
    response, sent = asyncio.run(_ask(provider.get_tracer("test"), caller))
    assert response.output("answer").as_strings()[0]

    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "rag ModelInfer"]
    assert len(roots) == 1
    root = roots[0]
    # the caller's trace goes on: same trace id, the caller's span is the parent
    assert format(root.context.trace_id, "032x") == CALLER_TRACE
    assert root.parent is not None and format(root.parent.span_id, "016x") == CALLER_PARENT
    assert root.attributes["ragraph.request_id"] == "req-42"
    children = {s.name: s for s in spans if s is not root}
    expected = ["guard", "switch", "encode", "retrieve", "prompt", "generate", "classify", "combine"]
    assert sorted(children) == sorted(f"node {n}" for n in expected)
    for span in children.values():
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        assert span.attributes["ragraph.node.status"] == "ok"
        assert root.start_time <= span.start_time and span.end_time <= root.end_time

    # every node call carried the request id and a traceparent naming that node's own span
    node_spans = {format(s.context.span_id, "016x"): s.name for s in children.values()}
    assert len(sent) == 4  # guard, encode, generate (stream), classify
    called = []
    for headers in sent:
        assert headers["x-request-id"] == "req-42"
        version, trace_id, span_id, flags = headers["traceparent"].split("-")
        assert trace_id == CALLER_TRACE and span_id in node_spans
        called.append(node_spans[span_id])
    assert called == ["node guard", "node encode", "node generate", "node classify"]


def test_tracing_off_sends_no_trace_headers(graph_env: None) -> None:
    from ragraph_client.otel import tracing_requested
    from ragraph_router.telemetry import Tracing

    assert not tracing_requested({}) and not Tracing(None).enabled
    assert tracing_requested({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing_requested({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert not tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_SDK_DISABLED": "true"})
    response, sent = asyncio.run(_ask(None, {"traceparent": f"00-{CALLER_TRACE}-{CALLER_PARENT}-01"}))
    assert response.output("answer").as_strings()[0]
    assert len(sent) == 4 and all(set(h) == {"x-request-id"} for h in sent)
