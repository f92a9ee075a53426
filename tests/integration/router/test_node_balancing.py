"""Spreading node calls over replicas: the router's node channels use round_robin over every
address a node URL resolves to (a headless Service in Kubernetes; here an ``ipv4:`` list of two
real llm services), pick_first keeps to one; and the nodes' max connection age, which makes
clients re-resolve and find new replicas, reaches MLServer's gRPC server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ragraph_client.client import InferenceClient

from tests.fixtures.servers import Service, run_peer, start_llm, start_router

QUESTION = "For how many months do we keep the first-of-month copies of the ledger database?"


@pytest.fixture(scope="module")
def second_llm(tmp_path_factory: pytest.TempPathFactory, tiny_llm_dir: Path) -> Iterator[Service]:
    service = start_llm(tmp_path_factory.mktemp("llm2"), tiny_llm_dir)
    yield service
    service.stop()


@pytest.mark.parametrize(("policy", "spread"), [("round_robin", True), ("pick_first", False)])
def test_llm_calls_spread_over_replicas(
    tmp_path: Path,
    encoder_service: Service,
    llm_service: Service,
    second_llm: Service,
    store_uri: str,
    policy: str,
    spread: bool,
) -> None:
    replicas = [llm_service, second_llm]
    env = {
        "RAGRAPH_ENCODER_URL": encoder_service.grpc_url,
        "RAGRAPH_LLM_URL": "ipv4:" + ",".join(r.grpc_url for r in replicas),
        "RAGRAPH_STORE": store_uri,
        "RAGRAPH_ROUTER_NODE_LB_POLICY": policy,
    }
    router = start_router(tmp_path / "router.log", env)
    try:
        before = [r.metric("ragraph_llm_generated_tokens_total") for r in replicas]
        with InferenceClient(router.grpc_url, timeout=60) as client:
            for _ in range(6):
                client.infer("rag", {"question": [QUESTION]}, {"max_tokens": 3})
        grew = [r.metric("ragraph_llm_generated_tokens_total") - b for r, b in zip(replicas, before, strict=True)]
    finally:
        router.stop()
    assert sum(grew) == 18
    if spread:
        assert grew == [9, 9]  # strict alternation over the two ready addresses
    else:
        assert sorted(grew) == [0, 18]


def test_max_connection_age_reaches_mlservers_grpc_options() -> None:
    out = run_peer(
        """
        import json
        from ragraph_serving import mlserver_patch
        from ragraph_serving.server import create_mlserver
        from ragraph_serving.settings import ServingSettings
        aged = create_mlserver(ServingSettings(max_connection_age_s=60), [], "t").settings
        plain = create_mlserver(ServingSettings(), [], "t").settings
        from mlserver.grpc.server import GRPCServer
        options = dict(GRPCServer(aged, None, None)._get_options())
        print(json.dumps({"aged": options, "plain": mlserver_patch.grpc_server_options(plain)}))
        """
    )
    assert out["aged"]["grpc.max_connection_age_ms"] == 60_000
    assert out["aged"]["grpc.max_connection_age_grace_ms"] >= 120_000
    assert out["plain"] is None
