"""Admission at the router: past ``max_inflight`` graph runs a request is refused at once with
RESOURCE_EXHAUSTED (HTTP 429, Retry-After), before the guard, the encoder or the LLM sees it;
once a run ends the next request is served. A router capped at one run, real node processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from ragraph_client.client import InferenceClient
from ragraph_client.errors import ResourceExhausted

from tests.fixtures.rest import call, infer_body
from tests.fixtures.servers import Service, graph_env, start_router, wait_for

QUESTION = "For how many months do we keep the first-of-month copies of the ledger database?"
OVERLOADED = "router overloaded: 1 requests are being answered, its limit (RAGRAPH_ROUTER_MAX_INFLIGHT); retry later"


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory, encoder_service: Service, llm_service: Service, store_uri: str
) -> Iterator[Service]:
    env = graph_env(encoder_service, llm_service, store_uri, max_inflight="1")
    service = start_router(tmp_path_factory.mktemp("admission") / "router.log", env)
    yield service
    service.stop()


def test_past_the_cap_requests_are_refused_before_any_node(router: Service) -> None:
    started, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def long_stream() -> None:
        try:
            with InferenceClient(router.grpc_url, timeout=120) as client:
                parts = 0
                params = {"max_tokens": 240, "temperature": 0.0}
                for message in client.stream("rag", {"question": [QUESTION]}, params):
                    parts += 1
                    if message.outputs and message.outputs[0].name == "answer" and not started.is_set():
                        started.set()
                        release.wait(60)  # hold the run open (the stream waits on us) while the probes go
                outcome["parts"] = parts
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            outcome["error"] = exc
            started.set()

    worker = threading.Thread(target=long_stream)
    worker.start()
    try:
        assert started.wait(120), "the long stream never started"
        assert "error" not in outcome, outcome
        assert router.metric("ragraph_router_inflight_requests") == 1
        guard = router.metric("ragraph_router_node_seconds_count", 'node="guard"')
        overloaded = router.metric("ragraph_router_overloaded_total")
        with InferenceClient(router.grpc_url, timeout=30) as client:
            with pytest.raises(ResourceExhausted) as info:
                client.infer("rag", {"question": [QUESTION]}, {"max_tokens": 2})
            assert info.value.message == OVERLOADED
            with pytest.raises(ResourceExhausted):
                list(client.stream("rag", {"question": [QUESTION]}, {"max_tokens": 2}))
        reply = call(router, "POST", "/v2/models/rag/infer", infer_body(QUESTION, {"max_tokens": 2}))
        assert reply.status == 429 and reply.body == {"error": OVERLOADED, "code": "RESOURCE_EXHAUSTED"}
        assert reply.headers["retry-after"] == "1"
        sse = call(router, "POST", "/v2/models/rag/generate_stream", {"question": QUESTION})
        assert sse.status == 429 and sse.headers["content-type"].startswith("application/json")
        assert router.metric("ragraph_router_overloaded_total") == overloaded + 4
        assert router.metric("ragraph_router_node_seconds_count", 'node="guard"') == guard  # no node was called
        # a bad request is still a 400, not a 429: parameters are checked before the cap
        bad = call(router, "POST", "/v2/models/rag/infer", infer_body(QUESTION, {"top_p": 7}))
        assert bad.status == 400 and bad.body["code"] == "INVALID_ARGUMENT"
    finally:
        release.set()
        worker.join(120)
    assert outcome["parts"] > 3
    wait_for(lambda: router.metric("ragraph_router_inflight_requests") == 0)
    with InferenceClient(router.grpc_url, timeout=60) as client:
        assert client.infer("rag", {"question": [QUESTION]}, {"max_tokens": 2}).parameters["completion_tokens"] == 2
