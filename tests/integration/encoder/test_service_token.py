"""The node service token: the real encoder started with RAGRAPH_ENCODER_SERVICE_TOKEN answers
inference, metadata and model-repository calls, over gRPC and REST, only when they carry
'x-ragraph-service-token'; health calls stay open. The router's node clients send it when
node_token is set (its contract check passes)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ragraph_client.client import AsyncInferenceClient, InferenceClient
from ragraph_client.errors import Unauthenticated

from tests.fixtures.servers import Service, free_port, start_service

TOKEN = "node-token-0f5c9a7e3b"
HEADER = "x-ragraph-service-token"


@pytest.fixture(scope="module")
def guarded_encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    log = tmp_path_factory.mktemp("guarded-encoder") / "encoder.log"
    service = start_service(
        ["encoder"],
        log,
        ["encoder", "classifier"],
        env={"RAGRAPH_ENCODER_SERVICE_TOKEN": TOKEN, "RAGRAPH_ENCODER_LOG_LEVEL": "DEBUG"},
    )
    yield service
    service.stop()


def test_health_stays_open(guarded_encoder: Service) -> None:
    with InferenceClient(guarded_encoder.grpc_url, timeout=10) as client:
        assert client.live() is True
        assert client.ready() is True
        assert client.model_ready("encoder") is True


@pytest.mark.parametrize("headers", [None, {HEADER: "wrong"}, {HEADER: TOKEN + "x"}, {"authorization": TOKEN}])
def test_infer_and_metadata_need_the_token(guarded_encoder: Service, headers: dict[str, str] | None) -> None:
    with InferenceClient(guarded_encoder.grpc_url, timeout=10, headers=headers) as client:
        with pytest.raises(Unauthenticated, match="^missing or wrong service token$"):
            client.infer("encoder", {"text": ["hello"]})
        with pytest.raises(Unauthenticated, match="missing or wrong service token"):
            client.metadata("encoder")
        with pytest.raises(Unauthenticated, match="missing or wrong service token"):
            list(client.stream("encoder", {"text": ["hello"]}, style="mlserver"))


def test_the_token_is_accepted(guarded_encoder: Service) -> None:
    with InferenceClient(guarded_encoder.grpc_url, timeout=30, headers={HEADER: TOKEN}) as client:
        embedding = client.infer("encoder", {"text": ["hello", "world"]}).output("embedding").as_numpy()
        assert embedding.shape == (2, 384)
        assert [t.name for t in client.metadata("encoder").inputs] == ["text"]
    # per-call headers work as well as the constructor's
    with InferenceClient(guarded_encoder.grpc_url, timeout=30) as client:
        assert client.infer("encoder", {"text": ["x"]}, headers={HEADER: TOKEN}).output("embedding").shape == [1, 384]


async def test_router_node_clients_send_the_node_token(
    guarded_encoder: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragraph_router.service import RouterService
    from ragraph_router.settings import RouterSettings

    async with AsyncInferenceClient(guarded_encoder.grpc_url, timeout=30, headers={HEADER: TOKEN}) as client:
        assert (await client.infer("encoder", {"text": ["hi"]})).output("embedding").shape == [1, 384]

    monkeypatch.setenv("RAGRAPH_ENCODER_URL", guarded_encoder.grpc_url)
    monkeypatch.setenv("RAGRAPH_LLM_URL", f"127.0.0.1:{free_port()}")  # no llm: its problems are expected
    monkeypatch.setenv("RAGRAPH_STORE", f"local://{tmp_path}/store")
    problems = {}
    for token in (None, TOKEN):
        service = RouterService(RouterSettings(node_token=token, check_interval_s=1.0))
        try:
            problems[token] = await service.check()
        finally:
            await service.close()
    encoder_problems = [p for p in problems[None] if guarded_encoder.grpc_url in p]
    assert encoder_problems and all("UNAUTHENTICATED" in p for p in encoder_problems)
    assert not [p for p in problems[TOKEN] if guarded_encoder.grpc_url in p]
    assert [p for p in problems[TOKEN] if "llm" in p]  # the check did run


def test_node_logs_are_json_lines_with_the_callers_request_id(guarded_encoder: Service) -> None:
    import json

    headers = {HEADER: TOKEN, "x-request-id": "req-from-router-7"}
    with InferenceClient(guarded_encoder.grpc_url, timeout=30, headers=headers) as client:
        client.infer("encoder", {"text": ["hello"]})  # the id only in metadata
        client.infer("encoder", {"text": ["hello"]}, id="req-in-body-8")  # the V2 id wins
    lines = [json.loads(line) for line in guarded_encoder.log().splitlines() if line.startswith('{"ts"')]
    ours = {line.get("request_id") for line in lines if line["msg"] == "ModelInfer encoder"}
    assert {"req-from-router-7", "req-in-body-8"} <= ours
    assert all(line["logger"].startswith("ragraph") and line["level"] for line in lines)


def test_graph_check_sends_the_node_token(guarded_encoder: Service, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.fixtures.servers import REPO

    env = {**os.environ, "RAGRAPH_STORE": f"local://{tmp_path}/store"}
    cmd = [
        sys.executable,
        "-m",
        "ragraph_cli.main",
        "graph",
        "check",
        "--json",
        "--encoder-url",
        guarded_encoder.grpc_url,
        "--llm-url",
        f"127.0.0.1:{free_port()}",
    ]
    outputs = {}
    for token in (None, TOKEN):
        run_env = {**env, "RAGRAPH_ROUTER_NODE_TOKEN": token} if token else env
        done = subprocess.run(cmd, capture_output=True, text=True, env=run_env, cwd=REPO, timeout=120)
        assert done.returncode == 1  # the llm is not there either way
        outputs[token] = done.stdout
    assert "UNAUTHENTICATED" in outputs[None] and guarded_encoder.grpc_url in outputs[None]
    assert "UNAUTHENTICATED" not in outputs[TOKEN]


def _unload_request(model: str) -> bytes:
    """RepositoryModelUnloadRequest{model_name = 1}, serialized by hand: MLServer's own stubs
    cannot load in a process that imports ours."""
    name = model.encode()
    return b"\x0a" + bytes([len(name)]) + name


@pytest.mark.parametrize(
    "method",
    [
        "/inference.GRPCInferenceService/RepositoryModelUnload",
        "/inference.model_repository.ModelRepositoryService/RepositoryModelUnload",
    ],
)
def test_model_repository_calls_need_the_token(guarded_encoder: Service, method: str) -> None:
    import grpc

    with grpc.insecure_channel(guarded_encoder.grpc_url) as channel:
        unload = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        for metadata in (None, [(HEADER, "wrong")]):
            with pytest.raises(grpc.RpcError) as info:
                unload(_unload_request("encoder"), metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert info.value.details() == "missing or wrong service token"
    with InferenceClient(guarded_encoder.grpc_url, timeout=30, headers={HEADER: TOKEN}) as client:
        assert client.model_ready("encoder") is True  # nothing was unloaded
        assert client.infer("encoder", {"text": ["still here"]}).output("embedding").shape == [1, 384]


def _http(service: Service, method: str, path: str, body: dict | None = None, token: str | None = None) -> int:
    import json
    import urllib.error
    import urllib.request

    headers = {"content-type": "application/json", **({HEADER: token} if token else {})}
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(f"http://127.0.0.1:{service.http_port}{path}", data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            assert json.loads(exc.read()) == {"error": "missing or wrong service token"}
        return int(exc.code)


def test_the_rest_port_needs_the_token_too(guarded_encoder: Service) -> None:
    infer = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/encoder/ready", "/v2"):
        assert _http(guarded_encoder, "GET", path) == 200, path  # health stays open
    protected = [
        ("POST", "/v2/models/encoder/infer", infer),
        ("GET", "/v2/models/encoder", None),
        ("POST", "/v2/repository/models/encoder/unload", None),
        ("POST", "/v2/repository/index", {}),
    ]
    for method, path, body in protected:
        for token in (None, "wrong"):
            assert _http(guarded_encoder, method, path, body, token) == 401, (path, token)
    assert _http(guarded_encoder, "POST", "/v2/models/encoder/infer", infer, TOKEN) == 200
    assert _http(guarded_encoder, "GET", "/v2/models/encoder", None, TOKEN) == 200
    assert _http(guarded_encoder, "GET", "/v2/models/encoder/ready") == 200  # nothing was unloaded


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    full = {k: v for k, v in os.environ.items() if k not in ("RAGRAPH_SERVICE_TOKEN", "RAGRAPH_ROUTER_NODE_TOKEN")}
    full.update(env or {})
    cmd = [sys.executable, "-m", "ragraph_cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=cwd, timeout=180)


def test_ingest_and_search_send_the_token(guarded_encoder: Service, tmp_path: Path) -> None:
    import json

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tokens.md").write_text("# Tokens\n\nThe node service token guards every node.\n")
    store = f"local://{tmp_path}/store"
    base = ["--store", store, "--encoder-url", guarded_encoder.grpc_url, "--json"]
    ingest = ["ingest", str(docs), "--no-progress", *base]
    search = ["search", "what guards the nodes?", *base]

    for args in (ingest, search):
        for extra in ([], ["--token", "wrong"]):
            refused = _cli(args + extra, tmp_path)
            assert refused.returncode == 1
            assert refused.stderr.strip() == "ragraph: UNAUTHENTICATED: missing or wrong service token"

    added = _cli(ingest + ["--token", TOKEN], tmp_path)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["added"] == 1
    found = _cli(search, tmp_path, env={"RAGRAPH_SERVICE_TOKEN": TOKEN})  # the variable instead of the flag
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0]["doc_id"] == "tokens.md"
    # the flag wins over the variable
    flagged = _cli(search + ["--token", "wrong"], tmp_path, env={"RAGRAPH_SERVICE_TOKEN": TOKEN})
    assert "UNAUTHENTICATED" in flagged.stderr


def test_ingest_reads_the_token_ragraph_up_leaves_for_a_loopback_node(guarded_encoder: Service, tmp_path: Path) -> None:
    import stat

    from ragraph_cli import tokens

    path = tokens.write_token(guarded_encoder.grpc_url, TOKEN, tmp_path)
    assert path == tmp_path / ".ragraph" / "tokens" / f"127.0.0.1_{guarded_encoder.grpc_port}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (tmp_path / "a.md").write_text("alpha beta gamma\n")
    args = ["ingest", "a.md", "--no-progress", "--json", "--store", f"local://{tmp_path}/store"]
    done = _cli([*args, "--encoder-url", guarded_encoder.grpc_url], tmp_path)
    assert done.returncode == 0, done.stderr
    # the same node reached as localhost reads the file for that address: none there
    search = ["search", "alpha", "--json", "--store", f"local://{tmp_path}/store"]
    found = _cli([*search, "--encoder-url", guarded_encoder.grpc_url], tmp_path)
    assert found.returncode == 0, found.stderr
    other = _cli([*search, "--encoder-url", f"localhost:{guarded_encoder.grpc_port}"], tmp_path)
    assert other.stderr.strip() == "ragraph: UNAUTHENTICATED: missing or wrong service token"
    tokens.remove_token(guarded_encoder.grpc_url, "not ours", tmp_path)
    assert path.exists()  # a file holding another token is left alone
    tokens.remove_token(guarded_encoder.grpc_url, TOKEN, tmp_path)
    assert not path.exists()


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("127.0.0.1:8101", True),
        ("localhost:8101", True),
        ("[::1]:8101", True),
        ("127.1.2.3:1", True),
        ("10.0.0.5:8101", False),
        ("encoder:8101", False),
        ("dns:///encoder.ragraph:8101", False),
    ],
)
def test_up_tokens_are_only_read_for_loopback_nodes(
    url: str, loopback: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragraph_cli import tokens

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAGRAPH_SERVICE_TOKEN", raising=False)
    monkeypatch.delenv("RAGRAPH_ROUTER_NODE_TOKEN", raising=False)
    tokens.write_token(url, "from-up")
    assert tokens.is_loopback(url) is loopback
    assert tokens.resolve(None, url) == ("from-up" if loopback else None)
    assert tokens.resolve("flag", url) == "flag"
    monkeypatch.setenv("RAGRAPH_ROUTER_NODE_TOKEN", "from-router-env")  # inside a router container
    assert tokens.resolve(None, url) == "from-router-env"
    monkeypatch.setenv("RAGRAPH_SERVICE_TOKEN", "from-env")
    assert tokens.resolve(None, url) == "from-env"
    assert tokens.resolve("flag", url) == "flag"
