"""Peers we did not write talk to the router: tritonclient.grpc (unary, its streaming API,
readiness and metadata) in a process of its own (its `inference.*` stubs collide with ours), and
grpc.health.v1 Check."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fixtures.corpus import ingest_corpus
from tests.fixtures.servers import Service, run_peer, start_router, wait_for

QUESTION = "How often should the espresso machine be descaled?"

# Shared by the peer scripts: the question as tritonclient's BYTES input, and a response's
# parameters (an InferParameter map) as plain values.
PEER_PRELUDE = f"""
import json
import queue
import numpy as np
import tritonclient.grpc as tc

def question():
    tensor = tc.InferInput("question", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([{QUESTION!r}], dtype=object))
    return tensor

def params(message):
    return {{k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in message.parameters.items()}}

def strings(result, name):
    array = result.as_numpy(name)
    return None if array is None else [x.decode() for x in array.reshape(-1)]
"""


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory, encoder_service: Service, llm_service: Service
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("peers")
    uri = ingest_corpus(root, encoder_service.grpc_url, ["espresso-machine-care.md", "houseplant-care.md"])
    urls = {"RAGRAPH_ENCODER_URL": encoder_service.grpc_url, "RAGRAPH_LLM_URL": llm_service.grpc_url}
    service = start_router(root / "router.log", {**urls, "RAGRAPH_STORE": uri})
    yield service
    service.stop()


def _peer(router: Service, body: str) -> dict:
    client = f"client = tc.InferenceServerClient(url={router.grpc_url!r})\n"
    return run_peer(PEER_PRELUDE + client + textwrap.dedent(body))


def test_tritonclient_infer(router: Service) -> None:
    result = _peer(
        router,
        """
        result = client.infer("rag", [question()], parameters={"max_tokens": 8, "temperature": 0.0, "debug": True},
                              client_timeout=60)
        out = {name: strings(result, name) for name in ("answer", "sources", "label", "guard")}
        print(json.dumps({"outputs": out, "parameters": params(result.get_response())}))
        """,
    )
    out, parameters = result["outputs"], result["parameters"]
    assert all(len(v) == 1 for v in out.values())
    sources = json.loads(out["sources"][0])
    assert sources and sources[0]["doc_id"] == "espresso-machine-care.md"
    assert out["answer"][0] and out["guard"] == ["benign"] and out["label"][0] in {"answered", "off_topic", "refused"}
    assert parameters["completion_tokens"] == 8 and parameters["finish_reason"] == "length"
    assert list(json.loads(parameters["nodes"]))[0] == "guard" and "debug" in parameters


def test_tritonclient_stream(router: Service) -> None:
    result = _peer(
        router,
        """
        responses = queue.Queue()
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        client.async_stream_infer("rag", [question()], request_id="peer-1",
                                  parameters={"max_tokens": 12, "temperature": 0.0})
        seen = []
        while True:
            result, error = responses.get(timeout=60)
            if error is not None:
                raise SystemExit(f"stream error: {error}")
            message = result.get_response()
            names = [t.name for t in message.outputs]
            p = params(message)
            seen.append({"id": message.id, "names": names, "params": p,
                         "text": {n: strings(result, n) for n in names}})
            if p.get("triton_final_response"):
                break
        client.stop_stream()
        whole = client.infer("rag", [question()], parameters={"max_tokens": 12, "temperature": 0.0})
        print(json.dumps({"seen": seen, "answer": strings(whole, "answer")[0]}))
        """,
    )
    seen = result["seen"]
    kinds = ["sources" if m["names"] == ["sources"] else "delta" if m["names"] == ["answer"] else "final" for m in seen]
    assert kinds[0] == "sources" and kinds[-1] == "final" and set(kinds[1:-1]) == {"delta"}, kinds
    assert all(m["id"] == "peer-1" for m in seen)
    assert sorted(seen[-1]["names"]) == ["guard", "label"] and seen[-1]["text"]["guard"] == ["benign"]
    assert seen[-1]["params"]["completion_tokens"] == 12
    assert not any(m["params"].get("triton_final_response") for m in seen[:-1])
    json.loads(seen[0]["text"]["sources"][0])
    assert "".join(m["text"]["answer"][0] for m in seen[1:-1]) == result["answer"]  # greedy: same both ways


def test_tritonclient_readiness_and_metadata(router: Service) -> None:
    result = _peer(
        router,
        """
        meta = client.get_model_metadata("rag")
        print(json.dumps({
            "live": client.is_server_live(), "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready("rag"),
            "name": meta.name, "platform": meta.platform, "versions": list(meta.versions),
            "inputs": [[t.name, t.datatype, list(t.shape)] for t in meta.inputs],
            "outputs": [[t.name, t.datatype, list(t.shape)] for t in meta.outputs],
            "server": client.get_server_metadata().name,
        }))
        """,
    )
    assert result["live"] and result["ready"] and result["model_ready"]
    assert result["name"] == "rag" and result["versions"] == ["1"] and result["platform"] == "ragraph-graph"
    assert result["server"] == "ragraph-router"
    assert result["inputs"] == [["question", "BYTES", [1]]]
    assert [o[0] for o in result["outputs"]] == ["answer", "sources", "label", "guard"]
    assert all(o[1] == "BYTES" for o in result["outputs"])


def test_grpc_health_check_serving(router: Service) -> None:
    with grpc.insecure_channel(router.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def status(service: str) -> int:
            try:
                return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status)
            except grpc.RpcError as err:  # NOT_FOUND until the router first sets it
                assert err.code() == grpc.StatusCode.NOT_FOUND
                return -1

        for service in ("", "rag"):  # the router keeps these in step with its readiness every 0.2 s
            wait_for(lambda s=service: status(s) == health_pb2.HealthCheckResponse.SERVING)
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
