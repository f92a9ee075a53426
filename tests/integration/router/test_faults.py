"""Faults in the graph's nodes, seen through the router: an LLM killed mid-stream (and brought
back on the same port without restarting the router), the encoder going down, and a client
cancelling a stream. Every process here is the module's own: the session-shared encoder and LLM
are never killed.

The tiny LLM has a 256-token window and makes ~1000 tokens/s here; it is served with
``--context-window 2048`` (its rotary positions go past the config's 256) so that one answer of
~1900 tokens lasts ~2 s: long enough to kill or cancel it after its first deltas."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ragraph_client.client import InferenceClient
from ragraph_client.errors import Unavailable
from ragraph_client.tensors import InferResponse

from tests.fixtures.corpus import ingest_corpus
from tests.fixtures.servers import (
    REPO,
    Service,
    _await_ready,
    serve_command,
    start_llm,
    start_router,
    start_service,
    wait_for,
)

QUESTION = "How often should the espresso machine be descaled?"
WINDOW = 2048
LONG = {"max_tokens": WINDOW - 150, "temperature": 0.0}  # ~2 s of generation
CHECK_INTERVAL_S = 0.3


@dataclass
class Graph:
    """The module's own node processes and router; ``llm`` is replaced when it is restarted."""

    encoder: Service
    llm: Service
    model_dir: Path
    log_dir: Path
    router: Service = field(init=False)


def _restart_llm(old: Service, model_dir: Path, log_path: Path) -> Service:
    """``ragraph serve llm`` again on the ports of ``old`` (which is dead)."""
    args = ["llm", "--model", str(model_dir), "--device", "cpu", "--context-window", str(WINDOW)]
    cmd = serve_command(args, old.grpc_port, old.http_port, old.metrics_port)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log_file = open(log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
    process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    return _await_ready(Service(process, old.grpc_port, old.http_port, old.metrics_port, log_path), ["llm"], 120)


def _kill(service: Service) -> None:
    service.process.send_signal(signal.SIGKILL)
    service.process.wait(10)


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory, tiny_llm_dir: Path) -> Iterator[Graph]:

    root = tmp_path_factory.mktemp("faults")
    with ThreadPoolExecutor(2) as pool:  # both nodes load at once
        encoder_f = pool.submit(start_service, ["encoder"], root / "encoder.log", ["encoder", "classifier"])
        llm_f = pool.submit(start_llm, root, tiny_llm_dir, "--context-window", str(WINDOW))
        started = [f.result() for f in (encoder_f, llm_f) if f.exception() is None]
        if len(started) < 2:
            for service in started:
                service.stop()
            raise next(e for f in (encoder_f, llm_f) if (e := f.exception()) is not None)
    graph = Graph(encoder_f.result(), llm_f.result(), tiny_llm_dir, root)
    try:
        uri = ingest_corpus(root, graph.encoder.grpc_url, ["espresso-machine-care.md"])
        env = {
            "RAGRAPH_ENCODER_URL": graph.encoder.grpc_url,
            "RAGRAPH_LLM_URL": graph.llm.grpc_url,
            "RAGRAPH_STORE": uri,
            "RAGRAPH_ROUTER_CHECK_INTERVAL_S": str(CHECK_INTERVAL_S),
        }
        graph.router = start_router(root / "router.log", env)
        yield graph
    finally:
        for service in (getattr(graph, "router", None), graph.llm, graph.encoder):  # the LLM may be a restarted one
            if service is not None:
                service.stop()


@pytest.fixture()
def client(graph: Graph) -> Iterator[InferenceClient]:
    with InferenceClient(graph.router.grpc_url, timeout=30) as c:
        yield c


def _kind(response: InferResponse) -> str:
    names = {t.name for t in response.outputs}
    return "sources" if "sources" in names else "final" if "label" in names else "delta"


def test_client_cancel_reaches_the_llm(client: InferenceClient, graph: Graph) -> None:
    cancelled = graph.llm.metric("ragraph_llm_finished_sequences_total", 'reason="cancelled"')
    kinds = []
    stream = client.stream("rag", {"question": [QUESTION]}, LONG)
    for response in stream:
        kinds.append(_kind(response))
        if kinds.count("delta") == 2:
            break
    stream.close()  # the generator's finally cancels the call
    assert kinds == ["sources", "delta", "delta"]
    wait_for(
        lambda: graph.llm.metric("ragraph_llm_finished_sequences_total", 'reason="cancelled"') == cancelled + 1,
        timeout=10,
    )
    # the LLM stopped early: it did not also count the sequence as finished by length
    assert graph.llm.metric("ragraph_llm_finished_sequences_total", 'reason="length"') == 0
    assert client.infer("rag", {"question": [QUESTION]}, {"max_tokens": 4}).output("answer").as_strings()[0]


def test_llm_killed_mid_stream_then_back_on_the_same_port(client: InferenceClient, graph: Graph) -> None:
    deadline = 20.0
    kinds: list[str] = []
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        for response in client.stream("rag", {"question": [QUESTION]}, LONG, timeout=deadline):
            kinds.append(_kind(response))
            if kinds.count("delta") == 1:
                _kill(graph.llm)
    failed_after = time.monotonic() - started
    assert kinds[:2] == ["sources", "delta"] and set(kinds[1:]) == {"delta"}  # no final message
    assert failed_after < deadline / 2
    message = str(info.value)
    assert f"node generate (llm@{graph.llm.grpc_url})" in message, message
    assert graph.router.process.poll() is None

    wait_for(lambda: not client.ready(), timeout=10 * CHECK_INTERVAL_S + 5)
    with pytest.raises(Unavailable, match="node generate"):
        client.infer("rag", {"question": [QUESTION]}, {"max_tokens": 4})

    graph.llm = _restart_llm(graph.llm, graph.model_dir, graph.log_dir / "llm-restarted.log")
    wait_for(client.ready, timeout=30)
    reply = client.infer("rag", {"question": [QUESTION]}, {"max_tokens": 8})
    assert reply.output("answer").as_strings()[0] and reply.parameters["completion_tokens"] == 8
    parts = list(client.stream("rag", {"question": [QUESTION]}, {"max_tokens": 8}))
    assert [_kind(p) for p in parts][-1] == "final" and parts[-1].parameters["triton_final_response"] is True


def test_encoder_down_makes_the_router_unready_and_requests_fail_fast(client: InferenceClient, graph: Graph) -> None:
    assert client.ready()
    _kill(graph.encoder)
    where = f"@{graph.encoder.grpc_url}"
    # right away (the router may not have noticed yet) and once it has: UNAVAILABLE, fast, naming
    # the node and the endpoint
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            client.infer("rag", {"question": [QUESTION]}, {"max_tokens": 4}, timeout=20)
        assert time.monotonic() - started < 2.0
        message = str(info.value)
        assert "node guard" in message and f"classifier{where}" in message, message
        wait_for(lambda: not client.ready(), timeout=10 * CHECK_INTERVAL_S + 2)
        # and a whole check begun after the kill: one that was running when the server died can
        # have seen the classifier still answer and the encoder not (as a full run once did)
        time.sleep(2 * CHECK_INTERVAL_S)
    assert "not ready" in message and f"node encode: encoder{where}" in message, message
