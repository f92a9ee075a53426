"""MLServer's model repository API on a real encoder: load and unload are off unless
RAGRAPH_ENCODER_MODEL_REPOSITORY_API=true (PERMISSION_DENIED over gRPC, 403 over REST, token or
not, the models untouched); turned on, they work for a caller with the service token only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from ragraph_client.client import InferenceClient

from tests.fixtures.servers import Service, start_service

TOKEN = "repository-token-5d1e"
HEADER = "x-ragraph-service-token"
OFF = "model load/unload is turned off on this server (set RAGRAPH_ENCODER_MODEL_REPOSITORY_API=true to allow it)"
METHODS = [
    "/inference.GRPCInferenceService/RepositoryModel{}",
    "/inference.model_repository.ModelRepositoryService/RepositoryModel{}",
]


def _name_request(model: str) -> bytes:
    """Repository{Load,Unload}Request{model_name = 2} by hand: MLServer's own stubs cannot load in
    a process that imports ours."""
    name = model.encode()
    return b"\x12" + bytes([len(name)]) + name


def _call(service: Service, method: str, model: str, token: str | None = None) -> grpc.RpcError | None:
    with grpc.insecure_channel(service.grpc_url) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(_name_request(model), metadata=[(HEADER, token)] if token else None, timeout=30)
        except grpc.RpcError as exc:
            return exc
    return None


def _rest(service: Service, path: str, token: str | None = None) -> tuple[int, dict]:
    headers = {"content-type": "application/json", **({HEADER: token} if token else {})}
    request = urllib.request.Request(f"http://{service.http_url}{path}", b"", headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), {}
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


def _serving(service: Service, token: str | None = None) -> None:
    headers = {HEADER: token} if token else None
    with InferenceClient(service.grpc_url, timeout=30, headers=headers) as client:
        assert client.model_ready("encoder") and client.model_ready("classifier")
        assert client.infer("encoder", {"text": ["still here"]}).output("embedding").shape == [1, 384]
        assert client.infer("classifier", {"text": ["what is a vector store?"]}).output("label").shape == [1]


@pytest.mark.parametrize("action", ["Unload", "Load"])
@pytest.mark.parametrize("method", METHODS)
def test_load_and_unload_are_off_by_default(encoder_service: Service, method: str, action: str) -> None:
    for model in ("encoder", "classifier", "other"):
        error = _call(encoder_service, method.format(action), model)
        assert error is not None, model
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.details() == OFF
    _serving(encoder_service)


def test_rest_load_and_unload_are_403_by_default(encoder_service: Service) -> None:
    for path in (
        "/v2/repository/models/encoder/unload",
        "/v2/repository/models/classifier/load",
        "/v2/repository/models/encoder/unload/",
    ):
        assert _rest(encoder_service, path) == (403, {"error": OFF}), path
    _serving(encoder_service)


@pytest.fixture(scope="module")
def open_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    log = tmp_path_factory.mktemp("repository-on") / "encoder.log"
    env = {"RAGRAPH_ENCODER_SERVICE_TOKEN": TOKEN, "RAGRAPH_ENCODER_MODEL_REPOSITORY_API": "true"}
    service = start_service(["encoder"], log, ["encoder", "classifier"], env=env)
    yield service
    service.stop()


def test_turned_on_the_token_still_guards_it(open_repository: Service) -> None:
    for method in METHODS:
        for token in (None, "wrong"):
            error = _call(open_repository, method.format("Unload"), "classifier", token)
            assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error.details() == "missing or wrong service token"
    assert _rest(open_repository, "/v2/repository/models/classifier/unload") == (
        401,
        {"error": "missing or wrong service token"},
    )
    _serving(open_repository, TOKEN)


def test_turned_on_a_caller_with_the_token_can_unload(open_repository: Service) -> None:
    assert _call(open_repository, METHODS[0].format("Unload"), "classifier", TOKEN) is None
    with InferenceClient(open_repository.grpc_url, timeout=30, headers={HEADER: TOKEN}) as client:
        assert client.model_ready("encoder") is True
        assert client.infer("encoder", {"text": ["the encoder stays"]}).output("embedding").shape == [1, 384]
        with pytest.raises(Exception, match="classifier"):
            client.model_ready("classifier")
