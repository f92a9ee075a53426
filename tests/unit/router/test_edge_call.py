"""The Edge's public steps (admit, slot, charge, call) that the V2 doors and the OpenAI API's
node calls share, with a fake gate and service: what is counted, refused and charged."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from ragraph_client.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from ragraph_router.access.gate import Principal
from ragraph_router.edge import Edge, Overloaded
from ragraph_router.openai_edge import admitted
from ragraph_router.telemetry import RouterMetrics, Tracing

CALLER = Principal("k1", "caller")


class FakeGate:
    def __init__(self, admit_error: Exception | None = None, charge_error: Exception | None = None) -> None:
        self.admit_error = admit_error
        self.charge_error = charge_error
        self.admitted: list[Principal] = []
        self.charged: list[tuple[Principal, int]] = []

    def authenticate(self, headers: Any) -> Principal:
        return CALLER

    async def admit(self, principal: Principal) -> None:
        if self.admit_error is not None:
            raise self.admit_error
        self.admitted.append(principal)

    async def charge(self, principal: Principal, tokens: int) -> None:
        if self.charge_error is not None:
            raise self.charge_error
        self.charged.append((principal, tokens))

    async def close(self) -> None:
        pass


def make_edge(gate: FakeGate | None = None, max_inflight: int = 0, ready: bool = True) -> Edge:
    settings = SimpleNamespace(model_name="rag", max_inflight=max_inflight)
    service = SimpleNamespace(settings=settings, ready=ready, graph=SimpleNamespace(name="g"), problems=["llm down"])
    return Edge(service, gate or FakeGate(), RouterMetrics(), Tracing(None))  # type: ignore[arg-type]


def sample(edge: Edge, name: str, **labels: str) -> float:
    return edge.metrics.registry.get_sample_value(name, labels) or 0.0


def requests(edge: Edge, method: str, code: str) -> float:
    return sample(edge, "ragraph_router_requests_total", method=method, code=code)


async def test_a_call_is_counted_and_its_tokens_charged_when_it_ends() -> None:
    gate = FakeGate()
    edge = make_edge(gate)
    async with edge.call("req-1", {}, "M", streaming=True) as call:
        assert sample(edge, "ragraph_router_inflight_streams") == 1
        call.principal = await edge.admit({})
        call.tokens = 7
    assert gate.charged == [(CALLER, 7)]
    assert requests(edge, "M", "OK") == 1
    assert sample(edge, "ragraph_router_inflight_streams") == 0


async def test_a_failed_call_is_counted_under_its_code_and_charges_nothing_before_admission() -> None:
    gate = FakeGate()
    edge = make_edge(gate)
    with pytest.raises(InvalidArgument):
        async with edge.call("req-2", {}, "M") as call:
            call.tokens = 3  # no principal: nobody to charge
            raise InvalidArgument("bad")
    assert gate.charged == []
    assert requests(edge, "M", "INVALID_ARGUMENT") == 1


async def test_a_cancelled_call_is_counted_cancelled() -> None:
    edge = make_edge()

    async def body() -> None:
        async with edge.call("req-3", {}, "M"):
            await asyncio.sleep(10)

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert requests(edge, "M", "CANCELLED") == 1


async def test_a_bug_is_counted_internal() -> None:
    edge = make_edge()
    with pytest.raises(ZeroDivisionError):
        async with edge.call("req-4", {}, "M"):
            _ = 1 / 0
    assert requests(edge, "M", "INTERNAL") == 1


async def test_admit_checks_the_model_before_taking_from_the_rate_limit() -> None:
    gate = FakeGate()
    edge = make_edge(gate)
    with pytest.raises(NotFound, match="unknown model 'other'"):
        await edge.admit({}, "other")
    assert gate.admitted == []
    assert await edge.admit({}, "rag") == CALLER
    assert gate.admitted == [CALLER]


async def test_a_rate_limit_refusal_is_counted() -> None:
    refusal = ResourceExhausted("slow down")
    refusal.limit = "tokens"  # type: ignore[attr-defined]
    edge = make_edge(FakeGate(admit_error=refusal))
    with pytest.raises(ResourceExhausted):
        await edge.admit({})
    assert sample(edge, "ragraph_router_rate_limited_total", limit="tokens") == 1


async def test_the_slot_refuses_past_max_inflight_and_is_given_back() -> None:
    edge = make_edge(max_inflight=1)
    async with edge.slot():
        assert edge.inflight == 1
        with pytest.raises(Overloaded):
            async with edge.slot():
                pass
        assert edge.inflight == 1
    assert edge.inflight == 0
    assert sample(edge, "ragraph_router_overloaded_total") == 1
    with pytest.raises(ValueError):
        async with edge.slot():
            raise ValueError("x")
    assert edge.inflight == 0 and sample(edge, "ragraph_router_inflight_requests") == 0


async def test_a_limits_backend_blip_does_not_fail_a_charge() -> None:
    edge = make_edge(FakeGate(charge_error=Unavailable("redis down")))
    await edge.charge(CALLER, 5)  # logged, not raised


async def test_the_openai_node_call_counts_and_charges_its_tokens() -> None:
    gate = FakeGate()
    edge = make_edge(gate)
    async with admitted(edge, {}, "OpenAIChat", "req-5") as call:
        assert edge.inflight == 1
        call.tokens = 4
    assert edge.inflight == 0
    assert gate.charged == [(CALLER, 4)]
    assert sample(edge, "ragraph_router_completion_tokens_total") == 4
    assert requests(edge, "OpenAIChat", "OK") == 1


async def test_the_openai_node_call_is_refused_while_the_graph_is_not_ready() -> None:
    edge = make_edge(ready=False)
    with pytest.raises(Unavailable, match="graph g is not ready: llm down"):
        async with admitted(edge, {}, "OpenAIChat", "req-6"):
            raise AssertionError("not reached")
    assert edge.inflight == 0
    assert requests(edge, "OpenAIChat", "UNAVAILABLE") == 1
