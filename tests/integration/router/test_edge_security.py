"""The router's door over real gRPC: API keys (missing, wrong, revoked, good; health open),
rate limits (burst, then refill; retry-after trailer), one Redis budget shared by two router
processes, TLS and mTLS handshakes, the Prometheus series, and keys never written to the log."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ragraph_client.client import InferenceClient
from ragraph_client.errors import InvalidArgument, RagraphError, ResourceExhausted, Unauthenticated, Unavailable

from tests.fixtures.certs import Pki, make_pki
from tests.fixtures.redis_server import SKIP_REASON, start_redis
from tests.fixtures.servers import REPO, Service, graph_env, start_router

QUESTION = "For how many months do we keep the first-of-month copies of the ledger database?"
ASK = {"max_tokens": 4, "temperature": 0.0}


def _keys(path: Path, name: str, *flags: str) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragraph_cli.main",
            "keys",
            "create",
            "--name",
            name,
            "--file",
            str(path),
            "--json",
            *flags,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    keys = {
        "good": _keys(path, "good"),
        "revoked": _keys(path, "revoked"),
        "limited": _keys(path, "limited", "--rps", "0.5", "--burst", "2"),
    }
    subprocess.run(
        [sys.executable, "-m", "ragraph_cli.main", "keys", "revoke", keys["revoked"]["id"], "--file", str(path)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    return {"path": path, **keys}


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
    encoder_service: Service,
    llm_service: Service,
    store_uri: str,
    keyring: dict,
) -> Iterator[Service]:
    env = graph_env(encoder_service, llm_service, store_uri, api_keys_file=str(keyring["path"]), log_level="DEBUG")
    router = start_router(tmp_path_factory.mktemp("secured") / "router.log", env)
    yield router
    router.stop()


def _call(router: Service, headers: dict[str, str] | None, question: str = QUESTION) -> str:
    with InferenceClient(router.grpc_url, timeout=60, headers=headers) as client:
        reply = client.infer("rag", {"question": [question]}, ASK)
    return reply.output("answer").as_strings()[0]


@pytest.mark.parametrize(
    ("who", "message"),
    [
        (None, "missing API key"),
        ("wrong", "invalid API key"),
        ("revoked", "was revoked"),
        ("not-bearer", "malformed authorization header"),
    ],
)
def test_bad_keys_are_unauthenticated(secured: Service, keyring: dict, who: str | None, message: str) -> None:
    headers = {
        None: None,
        "wrong": {"authorization": "Bearer rgk_00000000_" + "x" * 43},
        "revoked": {"x-api-key": keyring["revoked"]["key"]},
        "not-bearer": {"authorization": "Basic " + keyring["good"]["key"]},
    }[who]
    with pytest.raises(Unauthenticated, match=message):
        _call(secured, headers)
    with pytest.raises(Unauthenticated), InferenceClient(secured.grpc_url, timeout=10, headers=headers) as client:
        client.metadata("rag")


def test_good_key_in_either_header_is_served(secured: Service, keyring: dict) -> None:
    key = keyring["good"]["key"]
    assert _call(secured, {"authorization": f"Bearer {key}"})
    assert _call(secured, {"x-api-key": key})
    with InferenceClient(secured.grpc_url, timeout=10, api_key=key) as client:
        assert client.metadata("rag").inputs[0].name == "question"


def test_health_needs_no_key(secured: Service) -> None:
    with InferenceClient(secured.grpc_url, timeout=10) as client:
        assert client.live() and client.ready() and client.model_ready("rag")
    with grpc.insecure_channel(secured.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "rag"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_rate_limit_burst_then_refill_with_retry_after(secured: Service, keyring: dict) -> None:
    key = keyring["limited"]["key"]  # 0.5 requests/s, burst 2
    stub_call = _raw_infer(secured, key)
    assert stub_call()[0] == grpc.StatusCode.OK and stub_call()[0] == grpc.StatusCode.OK
    code, details, trailers = stub_call()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert keyring["limited"]["id"] in details and "0.5 requests/s" in details
    retry_after = int(trailers["retry-after"])
    assert 1 <= retry_after <= 2
    time.sleep(retry_after + 0.1)  # one request's worth has refilled
    assert stub_call()[0] == grpc.StatusCode.OK
    assert stub_call()[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    # another key's budget is untouched
    assert _call(secured, {"x-api-key": keyring["good"]["key"]})


def _raw_infer(router: Service, key: str):  # noqa: ANN202 - a small closure for the table above
    from ragraph_client import convert
    from ragraph_client._generated import inference_pb2_grpc as pb_grpc
    from ragraph_client.client import make_request

    message = convert.request_to_pb(make_request("rag", {"question": [QUESTION]}, {"max_tokens": 2}), raw=True)

    def call() -> tuple[grpc.StatusCode, str, dict[str, str]]:
        with grpc.insecure_channel(router.grpc_url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            try:
                stub.ModelInfer(message, metadata=[("x-api-key", key)], timeout=60)
                return grpc.StatusCode.OK, "", {}
            except grpc.RpcError as err:
                return err.code(), err.details(), dict(err.trailing_metadata() or ())

    return call


def test_metrics_after_traffic(secured: Service, keyring: dict) -> None:
    with InferenceClient(secured.grpc_url, timeout=60, api_key=keyring["good"]["key"]) as client:
        messages = list(client.stream("rag", {"question": [QUESTION]}, ASK, style="triton"))
    assert messages[-1].parameters["triton_final_response"]
    with pytest.raises(Unauthenticated):
        _call(secured, None)
    body = urllib.request.urlopen(f"http://127.0.0.1:{secured.metrics_port}/metrics", timeout=10).read().decode()
    samples = _samples(body)
    assert samples['ragraph_router_requests_total{code="OK",method="ModelStreamInfer"}'] >= 1
    assert samples['ragraph_router_requests_total{code="UNAUTHENTICATED",method="ModelInfer"}'] >= 1
    assert samples["ragraph_router_unauthenticated_total"] >= 1
    assert samples['ragraph_router_request_seconds_count{method="ModelStreamInfer"}'] >= 1
    for node in ("guard", "encode", "retrieve", "generate", "classify"):
        assert samples[f'ragraph_router_node_seconds_count{{node="{node}",status="ok"}}'] >= 1
    assert samples["ragraph_router_ttft_seconds_count"] >= 1
    assert samples["ragraph_router_completion_tokens_total"] >= 4
    assert samples["ragraph_router_tokens_per_second_count"] >= 1
    assert samples["ragraph_router_inflight_streams"] == 0


def _samples(body: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels sorted}': value}."""
    out: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        if "{" in series:
            name, labels = series[:-1].split("{", 1)
            series = name + "{" + ",".join(sorted(labels.split(","))) + "}"
        out[series] = float(value)
    return out


def test_rate_limited_series_and_keys_never_logged(secured: Service, keyring: dict) -> None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{secured.metrics_port}/metrics", timeout=10).read().decode()
    assert _samples(body).get('ragraph_router_rate_limited_total{limit="requests"}', 0) >= 1
    log = secured.log()
    assert "request_id" in log  # JSON lines with the request id (DEBUG level in this module)
    for name in ("good", "revoked", "limited"):
        secret = keyring[name]["key"]
        assert secret not in log and secret.split("_", 2)[2] not in log


# --- Redis: two routers, one budget --------------------------------------------------------------


def test_two_routers_share_one_redis_budget(tmp_path: Path) -> None:
    if not shutil.which("redis-server"):
        pytest.skip(SKIP_REASON)
    redis = start_redis(tmp_path / "redis.log")
    key = _keys(tmp_path / "keys.json", "shared", "--rps", "0.05", "--burst", "3")
    # no nodes are up: an admitted request fails UNAVAILABLE (graph not ready) after spending its
    # token; a refused one fails RESOURCE_EXHAUSTED without spending anything
    env = {
        "RAGRAPH_ENCODER_URL": "127.0.0.1:9",
        "RAGRAPH_LLM_URL": "127.0.0.1:9",
        "RAGRAPH_STORE": f"local://{tmp_path}/store",
        "RAGRAPH_ROUTER_API_KEYS_FILE": str(tmp_path / "keys.json"),
        "RAGRAPH_ROUTER_REDIS_URL": redis.url,
    }
    routers = [start_router(tmp_path / f"router{i}.log", env, wait_ready=False) for i in range(2)]
    try:
        outcomes = []
        for i in range(6):
            with InferenceClient(routers[i % 2].grpc_url, timeout=10, api_key=key["key"]) as client:
                try:
                    client.infer("rag", {"question": [QUESTION]})
                except RagraphError as exc:
                    outcomes.append(type(exc))
        assert outcomes == [Unavailable] * 3 + [ResourceExhausted] * 3
    finally:
        for router in routers:
            router.stop()
        redis.stop()
    # without Redis the same two routers would have admitted 3 each
    routers = [
        start_router(tmp_path / f"alone{i}.log", {**env, "RAGRAPH_ROUTER_REDIS_URL": ""}, wait_ready=False)
        for i in range(2)
    ]
    try:
        admitted = 0
        for i in range(6):
            with InferenceClient(routers[i % 2].grpc_url, timeout=10, api_key=key["key"]) as client:
                try:
                    client.infer("rag", {"question": [QUESTION]})
                except Unavailable:
                    admitted += 1
                except ResourceExhausted:
                    pass
        assert admitted == 6
    finally:
        for router in routers:
            router.stop()


# --- TLS / mTLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_router(tmp_path: Path, pki: Pki, mtls: bool) -> Service:
    env = {
        "RAGRAPH_ENCODER_URL": "127.0.0.1:9",
        "RAGRAPH_LLM_URL": "127.0.0.1:9",
        "RAGRAPH_STORE": f"local://{tmp_path}/store",
        "RAGRAPH_ROUTER_TLS_CERT": str(pki.server_cert),
        "RAGRAPH_ROUTER_TLS_KEY": str(pki.server_key),
    }
    connect: dict = {"ca": str(pki.ca)}
    if mtls:
        env["RAGRAPH_ROUTER_TLS_CLIENT_CA"] = str(pki.ca)
        connect.update(cert=str(pki.client_cert), key=str(pki.client_key))
    return start_router(tmp_path / "router.log", env, wait_ready=False, connect=connect)


def _live(router: Service, **connect: object) -> bool:
    with InferenceClient(router.grpc_url, timeout=5, **connect) as client:  # type: ignore[arg-type]
        try:
            return client.live()
        except Unavailable:
            return False


def test_tls_handshake(tmp_path: Path, pki: Pki) -> None:
    router = _tls_router(tmp_path, pki, mtls=False)
    try:
        assert _live(router, ca=str(pki.ca))
        assert not _live(router)  # plaintext against a TLS port
        assert not _live(router, tls=True)  # system roots do not trust our throwaway CA
        # REST on the same certificate
        curl = subprocess.run(
            [
                "curl",
                "-sS",
                "--cacert",
                str(pki.ca),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"https://127.0.0.1:{router.http_port}/v2/health/live",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert curl.stdout == "200", curl.stderr
    finally:
        router.stop()


def test_mtls_requires_a_client_certificate_from_the_ca(tmp_path: Path, pki: Pki) -> None:
    router = _tls_router(tmp_path, pki, mtls=True)
    try:
        assert _live(router, ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key))
        assert not _live(router, ca=str(pki.ca))  # no client certificate
        assert not _live(router, ca=str(pki.ca), cert=str(pki.stranger_cert), key=str(pki.stranger_key))
    finally:
        router.stop()


def test_tls_settings_must_be_complete(tmp_path: Path, pki: Pki) -> None:
    from ragraph_router.server import RouterServer
    from ragraph_router.settings import RouterSettings

    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        RouterServer(RouterSettings(tls_cert=str(pki.server_cert)))
    with pytest.raises(ValueError, match="needs tls_cert"):
        RouterServer(RouterSettings(tls_client_ca=str(pki.ca)))
    with pytest.raises(InvalidArgument):
        InferenceClient("127.0.0.1:1", cert=str(pki.client_cert))
