"""The router's Prometheus metrics and OpenTelemetry tracing.

Metrics live in a registry of their own, served on ``metrics_port``. Tracing follows the
standard ``OTEL_*`` variables and is off unless one of them asks for an exporter
(``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``);
off means no span objects at all, not no-op ones. Trace context travels to the nodes as
``traceparent`` metadata (W3C), next to ``x-request-id``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from ragraph_client.otel import tracing_requested

log = logging.getLogger("ragraph.router")

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TOKENS_PER_S = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class RouterMetrics:
    """Every series the router exports (docs/operations.md lists them with their labels)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        kw: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter(
            "ragraph_router_requests", "Requests finished, by method and gRPC status code.", ["method", "code"], **kw
        )
        self.request_seconds = Histogram(
            "ragraph_router_request_seconds",
            "Whole-graph latency, request in to last byte out.",
            ["method"],
            buckets=_LATENCY,
            **kw,
        )
        self.node_seconds = Histogram(
            "ragraph_router_node_seconds",
            "Latency of each graph node, by outcome.",
            ["node", "status"],
            buckets=_LATENCY,
            **kw,
        )
        self.ttft = Histogram(
            "ragraph_router_ttft_seconds", "Request in to first answer text out.", buckets=_LATENCY, **kw
        )
        self.completion_tokens = Counter(
            "ragraph_router_completion_tokens", "Tokens generated for callers (rate() gives tokens/s).", **kw
        )
        self.tokens_per_second = Histogram(
            "ragraph_router_tokens_per_second",
            "Generation speed per request, first to last token.",
            buckets=_TOKENS_PER_S,
            **kw,
        )
        self.rate_limited = Counter("ragraph_router_rate_limited", "Requests refused by a rate limit.", ["limit"], **kw)
        self.unauthenticated = Counter(
            "ragraph_router_unauthenticated", "Requests refused for a missing or bad API key.", **kw
        )
        self.inflight_streams = Gauge("ragraph_router_inflight_streams", "Streams being served now.", **kw)
        self.inflight_requests = Gauge(
            "ragraph_router_inflight_requests", "Graph runs under way now (capped by max_inflight).", **kw
        )
        self.overloaded = Counter(
            "ragraph_router_overloaded", "Requests refused because max_inflight graph runs were under way.", **kw
        )
        self.cache = Counter("ragraph_router_cache", "Semantic cache lookups, by result.", ["result"], **kw)


class Tracing:
    """Spans for the request and each node; ``enabled=False`` makes every method a no-op.

    Spans are started with an explicit parent and never made "current": the graph runs inside
    async generators, where attaching a context on one ``__anext__`` and detaching it on another
    is unsafe."""

    def __init__(self, tracer: Any | None = None) -> None:
        self.tracer = tracer

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @classmethod
    def from_env(cls, service_name: str = "ragraph-router") -> Tracing:
        if not tracing_requested():
            return cls(None)
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service_name)})
        provider = TracerProvider(resource=resource)
        kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
        exporter: Any
        if kind == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers, TLS from OTEL_EXPORTER_OTLP_*
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        log.info("tracing on: %s exporter", kind)
        return cls(provider.get_tracer("ragraph.router"))

    def start(
        self,
        name: str,
        parent: Any = None,
        headers: Mapping[str, str] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> Any:
        """A started span (None when off). The parent is a span, or else the ``traceparent`` in
        ``headers`` (a caller's trace)."""
        if self.tracer is None:
            return None
        from opentelemetry import trace
        from opentelemetry.propagate import extract

        if parent is not None:
            context = trace.set_span_in_context(parent)
        else:
            context = extract(dict(headers or {}))
        kind = trace.SpanKind.SERVER if parent is None else trace.SpanKind.CLIENT
        return self.tracer.start_span(name, context=context, kind=kind, attributes=dict(attrs or {}) or None)

    def inject(self, span: Any, carrier: dict[str, str]) -> dict[str, str]:
        """``carrier`` plus ``traceparent`` naming ``span`` as the parent."""
        if span is not None:
            from opentelemetry import trace
            from opentelemetry.propagate import inject

            inject(carrier, context=trace.set_span_in_context(span))
        return carrier


def fail(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    code = getattr(getattr(exc, "code", None), "name", type(exc).__name__)
    span.set_attribute("rpc.grpc.status_code", str(code))
    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
