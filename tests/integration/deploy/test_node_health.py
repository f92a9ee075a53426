"""grpc.health.v1 on the MLServer-hosted nodes (ragraph_serving.health) and ``ragraph health``,
which the Dockerfiles' HEALTHCHECK and the exec probes run, against the real encoder service."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fixtures.servers import REPO, Service, free_port, wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING


def _check(url: str, service: str) -> int:
    with grpc.insecure_channel(url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ragraph_cli.main", "health", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("service", ["", "encoder", "classifier"])
def test_encoder_reports_serving_over_grpc_health(encoder_service: Service, service: str) -> None:
    # the health reporter reads the model registry every 0.5 s: SERVING follows readiness
    wait_for(lambda: _check(encoder_service.grpc_url, service) == SERVING, timeout=5.0)


def test_unknown_service_name_is_not_found(encoder_service: Service) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _check(encoder_service.grpc_url, "no-such-model")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_cli_exits_0_when_serving(encoder_service: Service) -> None:
    wait_for(lambda: _check(encoder_service.grpc_url, "") == SERVING, timeout=5.0)
    for service in ([], ["--service", "encoder"]):
        done = _cli(encoder_service.grpc_url, *service)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("SERVING: ") and len(done.stdout.strip().splitlines()) == 1


def test_health_cli_exits_1_for_an_unknown_service(encoder_service: Service) -> None:
    done = _cli(encoder_service.grpc_url, "--service", "no-such-model")
    assert done.returncode == 1
    assert done.stdout.startswith("UNKNOWN: ")


def test_health_cli_exits_1_against_a_closed_port() -> None:
    done = _cli(f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert done.returncode == 1
    assert done.stdout.startswith("UNREACHABLE: ") and "UNAVAILABLE" in done.stdout
    assert len(done.stdout.strip().splitlines()) == 1 and not done.stderr.strip()
