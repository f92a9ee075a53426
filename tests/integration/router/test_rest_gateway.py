"""The router's REST + SSE gateway, called the way curl calls it: V2 REST health, metadata and
infer, Triton's generate extension (generate, generate_stream as SSE), API keys and rate limits
over HTTP, status mapping, and a client that hangs up mid-stream stopping the LLM.

One router for the module, with a key file (a plain key, a rate-limited one, a revoked one), on
the session encoder and a module LLM served with a 2048-token window (as in test_faults.py) so
that a long answer lasts long enough to hang up on."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ragraph_client.client import InferenceClient

from tests.fixtures.certs import make_pki
from tests.fixtures.corpus import ingest_corpus
from tests.fixtures.rest import QUESTION, call, infer_body, parse_sse
from tests.fixtures.servers import Service, free_port, start_llm, start_router, wait_for

WINDOW = 2048
LONG = {"max_tokens": WINDOW - 150, "temperature": 0.0}  # ~2 s of generation
GREEDY = {"max_tokens": 12, "temperature": 0.0}
CANCELLED = 'reason="cancelled"'


@dataclass
class Keys:
    path: Path
    good: str
    limited: str  # 1 request, then 1 every 50 s
    revoked: str


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory, tiny_llm_dir: Path) -> Iterator[Service]:
    service = start_llm(tmp_path_factory.mktemp("rest-llm"), tiny_llm_dir, "--context-window", str(WINDOW))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    from ragraph_router.access.keys import create_key, revoke_key

    path = tmp_path_factory.mktemp("rest-keys") / "keys.json"
    good, _ = create_key(path, "rest-tests")
    limited, _ = create_key(path, "limited", rps=0.02, burst=1)
    revoked, record = create_key(path, "revoked")
    revoke_key(path, record.id)
    return Keys(path, good, limited, revoked)


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory, encoder_service: Service, llm: Service, keys: Keys
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("rest")
    uri = ingest_corpus(root, encoder_service.grpc_url, ["espresso-machine-care.md", "houseplant-care.md"])
    env = {
        "RAGRAPH_ENCODER_URL": encoder_service.grpc_url,
        "RAGRAPH_LLM_URL": llm.grpc_url,
        "RAGRAPH_STORE": uri,
        "RAGRAPH_ROUTER_API_KEYS_FILE": str(keys.path),
    }
    service = start_router(root / "router.log", env)
    yield service
    service.stop()


# --- curl-equivalent helpers --------------------------------------------------------------------------


def curl_stream(router: Service, key: str, body: dict, headers_file: Path | None = None) -> subprocess.Popen[str]:
    cmd = [
        "curl",
        "-sS",
        "-N",
        "-X",
        "POST",
        f"http://{router.http_url}/v2/models/rag/generate_stream",
        "-H",
        f"Authorization: Bearer {key}",
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps(body),
    ]
    if headers_file is not None:
        cmd += ["-D", str(headers_file)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kind(data: dict) -> str:
    return "sources" if "sources" in data else "final" if "label" in data else "delta" if "answer" in data else "?"


# --- health and metadata ----------------------------------------------------------------------------------


def test_health_and_server_metadata_need_no_key(router: Service) -> None:
    live = call(router, "GET", "/v2/health/live")
    assert (live.status, live.body) == (200, {"live": True})
    ready = call(router, "GET", "/v2/health/ready")
    assert (ready.status, ready.body) == (200, {"ready": True})
    assert call(router, "GET", "/v2/models/rag/ready").status == 200
    server = call(router, "GET", "/v2")
    assert server.status == 200 and server.body["name"] == "ragraph-router"
    assert {"streaming", "generate"} <= set(server.body["extensions"])
    missing = call(router, "GET", "/v2/models/nope/ready")
    assert missing.status == 404 and "unknown model 'nope'" in missing.body["error"]


def test_model_metadata_needs_a_key(router: Service, keys: Keys) -> None:
    reply = call(router, "GET", "/v2/models/rag", key=keys.good)
    assert reply.status == 200
    assert reply.body == {
        "name": "rag",
        "versions": ["1"],
        "platform": "ragraph-graph",
        "inputs": [{"name": "question", "datatype": "BYTES", "shape": [1]}],
        "outputs": [{"name": n, "datatype": "BYTES", "shape": [1]} for n in ("answer", "sources", "label", "guard")],
    }
    assert call(router, "GET", "/v2/models/rag").status == 401
    assert call(router, "GET", "/v2/models/nope", key=keys.good).status == 404


# --- inference ---------------------------------------------------------------------------------------------


def test_infer_matches_grpc_model_infer(router: Service, keys: Keys) -> None:
    reply = call(router, "POST", "/v2/models/rag/infer", infer_body(parameters=GREEDY, id="rest-1"), key=keys.good)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.body
    assert body["model_name"] == "rag" and body["id"] == "rest-1" and reply.headers["x-request-id"] == "rest-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert list(outputs) == ["answer", "sources", "label", "guard"]
    assert all(o["datatype"] == "BYTES" and o["shape"] == [1] and len(o["data"]) == 1 for o in outputs.values())
    answer = outputs["answer"]["data"][0]
    sources = json.loads(outputs["sources"]["data"][0])
    assert answer and sources and sources[0]["doc_id"] == "espresso-machine-care.md"
    assert outputs["guard"]["data"] == ["benign"]
    assert body["parameters"]["completion_tokens"] == 12 and body["parameters"]["finish_reason"] == "length"

    with InferenceClient(router.grpc_url, timeout=60, api_key=keys.good) as client:  # the gRPC door
        whole = client.infer("rag", {"question": [QUESTION]}, GREEDY)
    assert whole.output("answer").as_strings() == [answer]  # greedy: the same answer both ways
    assert json.loads(whole.output("sources").as_strings()[0]) == sources

    only = call(
        router,
        "POST",
        "/v2/models/rag/infer",
        infer_body(parameters=GREEDY, outputs=[{"name": "answer"}]),
        key=keys.good,
    )
    assert only.status == 200 and [o["name"] for o in only.body["outputs"]] == ["answer"]
    assert only.body["outputs"][0]["data"] == [answer] and only.body["id"]  # the router made an id

    # a JSON object as a parameter value travels as its JSON text: a filter as an object
    other = {"max_tokens": 1, "filter": {"doc_id": {"$eq": "houseplant-care.md"}}}
    filtered = call(router, "POST", "/v2/models/rag/infer", infer_body(parameters=other), key=keys.good)
    assert filtered.status == 200, filtered.body
    picked = json.loads(next(o for o in filtered.body["outputs"] if o["name"] == "sources")["data"][0])
    assert picked and {s["doc_id"] for s in picked} == {"houseplant-care.md"}

    flat = call(
        router, "POST", "/v2/models/rag/generate", {"text_input": QUESTION, "parameters": GREEDY}, key=keys.good
    )
    assert flat.status == 200, flat.body
    assert flat.body["answer"] == answer and json.loads(flat.body["sources"]) == sources
    assert flat.body["guard"] == "benign" and flat.body["parameters"]["completion_tokens"] == 12


def test_generate_stream_with_curl(router: Service, keys: Keys, tmp_path: Path) -> None:
    whole = call(router, "POST", "/v2/models/rag/generate", {"question": QUESTION, "parameters": GREEDY}, key=keys.good)
    assert whole.status == 200
    headers = tmp_path / "headers.txt"
    curl = curl_stream(router, keys.good, {"question": QUESTION, "parameters": GREEDY, "id": "sse-1"}, headers)
    out, err = curl.communicate(timeout=60)
    assert curl.returncode == 0, err
    head = headers.read_text().lower()
    assert head.startswith("http/1.1 200") and "content-type: text/event-stream" in head
    frames = parse_sse(out)
    assert all(event == "message" for event, _ in frames), frames
    kinds = [kind(data) for _, data in frames]
    assert kinds[0] == "sources" and kinds[-1] == "final" and set(kinds[1:-1]) == {"delta"}, kinds
    assert all(data["id"] == "sse-1" and data["model_name"] == "rag" for _, data in frames)
    assert json.loads(frames[0][1]["sources"]) == json.loads(whole.body["sources"])
    assert "".join(data["answer"] for _, data in frames[1:-1]) == whole.body["answer"]
    final = frames[-1][1]
    assert final["guard"] == "benign" and final["label"] == whole.body["label"]
    assert final["parameters"]["completion_tokens"] == 12 and final["parameters"]["triton_final_response"] is True
    assert not any("parameters" in data for _, data in frames[:-1])


# --- client mistakes -----------------------------------------------------------------------------------------

QUESTION_INPUT = {"name": "question", "shape": [1], "datatype": "BYTES", "data": [QUESTION]}


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("infer", b"{not json", "request body is not valid JSON"),
        ("infer", b"", "request body is empty"),
        ("infer", [1, 2], "must be a JSON object"),
        ("infer", {"parameters": {}}, "inputs must be a non-empty array"),
        ("infer", {"inputs": [{**QUESTION_INPUT, "name": "text"}]}, "missing input 'question'"),
        ("infer", {"inputs": [{**QUESTION_INPUT, "datatype": "INT32", "data": [1]}]}, "'question' must be BYTES"),
        ("infer", {"inputs": [{**QUESTION_INPUT, "datatype": "STRING"}]}, "inputs[0] ('question').datatype"),
        ("infer", {"inputs": [{**QUESTION_INPUT, "shape": [2]}]}, "shape [2] holds 2 elements but data holds 1"),
        ("infer", {"inputs": [{**QUESTION_INPUT, "data": [7]}]}, "inputs[0] ('question').data[0] must be a string"),
        ("infer", {"inputs": [{"name": "question", "shape": [1], "datatype": "BYTES"}]}, "missing field 'data'"),
        ("infer", {"inputs": [QUESTION_INPUT], "parameters": {"top_k": 0}}, "parameter 'top_k'"),
        ("infer", {"inputs": [QUESTION_INPUT], "parameters": [1]}, "parameters must be a JSON object"),
        ("infer", {"inputs": [QUESTION_INPUT], "outputs": [{"name": "nope"}]}, "outputs[0].name"),
        ("infer", {"inputs": [QUESTION_INPUT], "id": 5}, "id must be a string"),
        ("generate", {"parameters": {}}, "missing field 'question'"),
        ("generate", {"question": 3}, "question must be a string"),
        ("generate", {"question": QUESTION, "max_tokens": 3}, "unknown field 'max_tokens'"),
        ("generate_stream", {"text_input": "  "}, "'question' is empty"),
        ("generate_stream", b"[", "not valid JSON"),
    ],
)
def test_bad_requests_are_400_naming_the_field(router: Service, keys: Keys, path: str, body: Any, needle: str) -> None:
    reply = call(router, "POST", f"/v2/models/rag/{path}", body, key=keys.good)
    assert reply.status == 400, reply.body
    assert reply.headers["content-type"].startswith("application/json")  # not an event stream
    assert needle in reply.body["error"] and reply.body["code"] == "INVALID_ARGUMENT"


def test_bad_timeout_header_and_deadline(router: Service, keys: Keys) -> None:
    bad = call(
        router, "POST", "/v2/models/rag/infer", infer_body(), key=keys.good, headers={"x-request-timeout-ms": "soon"}
    )
    assert bad.status == 400 and "x-request-timeout-ms" in bad.body["error"]
    late = call(
        router,
        "POST",
        "/v2/models/rag/infer",
        infer_body(parameters=LONG),
        key=keys.good,
        headers={"x-request-timeout-ms": "300"},
    )
    assert late.status == 504 and late.body["code"] == "DEADLINE_EXCEEDED", late.body


def test_unknown_model_and_route_are_404(router: Service, keys: Keys) -> None:
    for path, body in [
        ("infer", infer_body()),
        ("generate", {"question": QUESTION}),
        ("generate_stream", {"question": QUESTION}),
    ]:
        reply = call(router, "POST", f"/v2/models/nope/{path}", body, key=keys.good)
        assert reply.status == 404 and "unknown model 'nope'" in reply.body["error"], (path, reply.body)
        assert reply.body["code"] == "NOT_FOUND"
    route = call(router, "GET", "/v2/nothing/here", key=keys.good)
    assert route.status == 404 and "no such endpoint" in route.body["error"]
    method = call(router, "GET", "/v2/models/rag/infer", key=keys.good)
    assert method.status == 405 and "POST" in method.headers["allow"]


# --- keys and limits ------------------------------------------------------------------------------------------


def test_api_keys_over_http(router: Service, keys: Keys) -> None:
    body = infer_body(parameters={"max_tokens": 1})
    missing = call(router, "POST", "/v2/models/rag/infer", body)
    assert missing.status == 401 and "missing API key" in missing.body["error"]
    assert missing.body["code"] == "UNAUTHENTICATED"
    wrong = call(router, "POST", "/v2/models/rag/infer", body, key=keys.good[:-4] + "AAAA")
    assert wrong.status == 401 and wrong.body["code"] == "UNAUTHENTICATED"
    revoked = call(router, "POST", "/v2/models/rag/infer", body, key=keys.revoked)
    assert revoked.status == 401 and "revoked" in revoked.body["error"]
    # a caller without a key learns nothing about its body: 401 before 400
    assert call(router, "POST", "/v2/models/rag/infer", b"{junk").status == 401
    stream = call(router, "POST", "/v2/models/rag/generate_stream", {"question": QUESTION})
    assert stream.status == 401 and stream.headers["content-type"].startswith("application/json")

    assert call(router, "POST", "/v2/models/rag/infer", body, key=keys.good).status == 200  # Bearer
    by_header = call(router, "POST", "/v2/models/rag/infer", body, headers={"X-API-Key": keys.good})
    assert by_header.status == 200
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/rag/ready"):
        assert call(router, "GET", path).status == 200
    log = router.log()
    assert keys.good not in log and keys.revoked not in log and keys.good.split("_", 2)[2] not in log


def test_rate_limit_is_429_with_retry_after(router: Service, keys: Keys) -> None:
    body = infer_body(parameters={"max_tokens": 1})
    assert call(router, "POST", "/v2/models/rag/infer", body, key=keys.limited).status == 200  # the burst of 1
    limited = call(router, "POST", "/v2/models/rag/infer", body, key=keys.limited)
    assert limited.status == 429 and limited.body["code"] == "RESOURCE_EXHAUSTED", limited.body
    assert 1 <= int(limited.headers["retry-after"]) <= 50
    stream = call(router, "POST", "/v2/models/rag/generate_stream", {"question": QUESTION}, key=keys.limited)
    assert stream.status == 429 and int(stream.headers["retry-after"]) >= 1
    assert call(router, "POST", "/v2/models/rag/infer", body, key=keys.good).status == 200  # other keys unaffected


# --- hanging up ----------------------------------------------------------------------------------------------


def test_client_disconnect_mid_stream_stops_the_llm(router: Service, llm: Service, keys: Keys) -> None:
    cancelled = llm.metric("ragraph_llm_finished_sequences_total", CANCELLED)
    by_length = llm.metric("ragraph_llm_finished_sequences_total", 'reason="length"')
    curl = curl_stream(router, keys.good, {"question": QUESTION, "parameters": LONG})
    kinds: list[str] = []
    try:
        assert curl.stdout is not None
        for line in curl.stdout:
            if line.startswith("data:"):
                kinds.append(kind(json.loads(line[len("data:") :])))
            if kinds.count("delta") == 2:
                break
        assert kinds == ["sources", "delta", "delta"]
        assert router.metric("ragraph_router_inflight_streams") == 1
    finally:
        curl.kill()  # the client goes away mid-answer
        curl.wait(10)
    wait_for(lambda: router.metric("ragraph_router_inflight_streams") == 0, timeout=10)
    wait_for(lambda: llm.metric("ragraph_llm_finished_sequences_total", CANCELLED) == cancelled + 1, timeout=10)
    assert llm.metric("ragraph_llm_finished_sequences_total", 'reason="length"') == by_length  # it did not run on
    again = call(router, "POST", "/v2/models/rag/infer", infer_body(parameters={"max_tokens": 4}), key=keys.good)
    assert again.status == 200


# --- TLS, and a graph that is not ready -------------------------------------------------------------------


def test_https_with_client_certificates_and_not_ready(tmp_path: Path) -> None:
    """A router whose nodes are not there, served over TLS with client certificates required
    (mTLS): the REST gateway uses the same certificates; health is open, readiness says 503, and
    inference is UNAVAILABLE -> 503."""
    pki = make_pki(tmp_path / "pki")
    nowhere = f"127.0.0.1:{free_port()}"
    env = {
        "RAGRAPH_ENCODER_URL": nowhere,
        "RAGRAPH_LLM_URL": nowhere,
        "RAGRAPH_STORE": f"local://{tmp_path}/store",
        "RAGRAPH_ROUTER_TLS_CERT": str(pki.server_cert),
        "RAGRAPH_ROUTER_TLS_KEY": str(pki.server_key),
        "RAGRAPH_ROUTER_TLS_CLIENT_CA": str(pki.ca),
    }
    connect = {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
    router = start_router(tmp_path / "router.log", env, wait_ready=False, connect=connect)
    try:
        tls = ssl.create_default_context(cafile=str(pki.ca))
        tls.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        live = call(router, "GET", "/v2/health/live", tls=tls)
        assert (live.status, live.body) == (200, {"live": True})
        ready = call(router, "GET", "/v2/health/ready", tls=tls)
        assert (ready.status, ready.body) == (503, {"ready": False})
        assert call(router, "GET", "/v2/models/rag/ready", tls=tls).status == 503
        down = call(router, "POST", "/v2/models/rag/infer", infer_body(), tls=tls)
        assert down.status == 503 and down.body["code"] == "UNAVAILABLE", down.body

        anonymous = ssl.create_default_context(cafile=str(pki.ca))  # no client certificate
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            call(router, "GET", "/v2/health/live", tls=anonymous)
        stranger = ssl.create_default_context(cafile=str(pki.ca))
        stranger.load_cert_chain(str(pki.stranger_cert), str(pki.stranger_key))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            call(router, "GET", "/v2/health/live", tls=stranger)
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            call(router, "GET", "/v2/health/live")  # plain HTTP to a TLS port
    finally:
        router.stop()
