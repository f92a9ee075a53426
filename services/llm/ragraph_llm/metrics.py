"""Prometheus metrics of the generation engine, registered on prometheus_client's default
registry, which MLServer serves at ``/metrics`` (one scrape shows MLServer's metrics and ours)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BY_REGISTRY: dict[int, EngineMetrics] = {}


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        kw: dict[str, Any] = {"registry": registry}
        self.ttft = Histogram(
            "ragraph_llm_time_to_first_token_seconds",
            "Submit to first generated token.",
            buckets=_LATENCY_BUCKETS,
            **kw,
        )
        self.inter_token = Histogram(
            "ragraph_llm_inter_token_seconds",
            "Time between consecutive tokens of one sequence.",
            buckets=_INTER_TOKEN_BUCKETS,
            **kw,
        )
        self.tokens = Counter("ragraph_llm_generated_tokens", "Tokens generated.", **kw)
        self.prompt_tokens = Counter("ragraph_llm_prompt_tokens", "Prompt tokens prefilled.", **kw)
        self.finished = Counter(
            "ragraph_llm_finished_sequences", "Sequences finished, by finish reason.", ["reason"], **kw
        )
        self.rejected = Counter("ragraph_llm_rejected_requests", "Requests refused because the queue was full.", **kw)
        self.queue_depth = Gauge("ragraph_llm_queue_depth", "Requests waiting for a batch slot.", **kw)
        self.running = Gauge("ragraph_llm_running_sequences", "Sequences in the running batch.", **kw)
        self.batch_size = Histogram(
            "ragraph_llm_step_batch_size",
            "Sequences per engine step.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            **kw,
        )


def engine_metrics(registry: CollectorRegistry) -> EngineMetrics:
    """One set per registry (a model reload must not register the names twice)."""
    key = id(registry)
    if key not in _BY_REGISTRY:
        _BY_REGISTRY[key] = EngineMetrics(registry)
    return _BY_REGISTRY[key]
