"""Bad requests to the LLM service over gRPC: each answers its status code with a message naming
what was wrong, streams answer the same codes, and the server keeps serving afterwards. Also
which InferParameter forms carry numbers (int64, string; double is dropped by MLServer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import grpc
import numpy as np
import pytest
from ragraph_client.client import InferenceClient
from ragraph_client.errors import RagraphError

from tests.fixtures.servers import Service, wait_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT
GREEDY = {"temperature": "0"}
PROMPT = {"prompt": ["Who invented printing?"]}


class Bad(NamedTuple):
    inputs: dict[str, Any]
    params: dict[str, Any]
    mentions: tuple[str, ...]  # each must appear in the error message
    code: grpc.StatusCode = INVALID
    model: str = "llm"


def msgs(value: Any) -> dict[str, Any]:
    return {"messages": [json.dumps(value)]}


# id -> (request, what the message must name); "stream" marks the rows also sent on ModelStreamInfer.
ROWS: dict[str, Bad] = {
    "max_tokens-negative": Bad(PROMPT, {"max_tokens": -1}, ("'max_tokens'", "at least 1")),
    "max_tokens-zero": Bad(PROMPT, {"max_tokens": 0}, ("'max_tokens'", "at least 1")),
    "max_tokens-over-limit": Bad(PROMPT, {"max_tokens": 5000}, ("'max_tokens'", "limit of 4096")),
    "max_tokens-fills-window": Bad(PROMPT, {"max_tokens": 256}, ("'max_tokens'", "context window of 256")),
    "max_tokens-over-window": Bad(PROMPT, {"max_tokens": 1000}, ("'max_tokens'", "context window of 256")),
    "max_tokens-not-integer": Bad(PROMPT, {"max_tokens": "2.5"}, ("'max_tokens'", "integer")),
    "max_tokens-bool": Bad(PROMPT, {"max_tokens": True}, ("'max_tokens'", "integer")),
    "temperature-negative": Bad(PROMPT, {"temperature": -0.5}, ("'temperature'", ">= 0")),
    "temperature-string": Bad(PROMPT, {"temperature": "hot"}, ("'temperature'", "number")),
    "temperature-inf": Bad(PROMPT, {"temperature": "inf"}, ("'temperature'", "finite")),
    "top_p-zero": Bad(PROMPT, {"top_p": 0}, ("'top_p'", "(0, 1]")),
    "top_p-over-one": Bad(PROMPT, {"top_p": 1.5}, ("'top_p'", "(0, 1]")),
    "top_k-negative": Bad(PROMPT, {"top_k": -2}, ("'top_k'",)),
    "stop-not-json": Bad(PROMPT, {"stop": "[oops"}, ("'stop'", "JSON")),
    "stop-not-list-of-strings": Bad(PROMPT, {"stop": "[1, 2]"}, ("'stop'", "list of strings")),
    "stop-object": Bad(PROMPT, {"stop": '{"a": "b"}'}, ("'stop'", "list of strings")),
    "stop-empty-string": Bad(PROMPT, {"stop": '["ok", ""]'}, ("'stop'", "empty string")),
    "stop-too-many": Bad(PROMPT, {"stop": json.dumps([f"s{i}" for i in range(17)])}, ("'stop'", "16")),
    "seed-negative": Bad(PROMPT, {"seed": -1}, ("'seed'",)),
    "unknown-parameter": Bad(PROMPT, {"top_k_tokens": 5}, ("unknown parameter 'top_k_tokens'", "top_k", "max_tokens")),
    "unknown-parameter-typo": Bad(PROMPT, {"temprature": "0"}, ("'temprature'", "temperature")),
    "context-not-json": Bad(PROMPT, {"context": "not json"}, ("'context'", "JSON")),
    "context-not-list-of-strings": Bad(PROMPT, {"context": '["ok", 3]'}, ("'context'", "list of strings")),
    "messages-not-json": Bad({"messages": ["[{role: user"]}, {}, ("'messages'", "JSON")),
    "messages-empty-list": Bad(msgs([]), {}, ("'messages'", "non-empty")),
    "messages-unknown-role": Bad(msgs([{"role": "wizard", "content": "hi"}]), {}, ("'messages'", "role 'wizard'")),
    "messages-no-content": Bad(msgs([{"role": "user"}]), {}, ("'messages'", "'content'")),
    "messages-content-not-string": Bad(msgs([{"role": "user", "content": 5}]), {}, ("'messages'", "'content'")),
    "prompt-and-messages": Bad(
        {**PROMPT, **msgs([{"role": "user", "content": "hi"}])}, {}, ("'prompt'", "'messages'", "exactly one")
    ),
    "wrong-input-name": Bad({"question": ["hi"]}, {}, ("'prompt'", "'messages'", "question")),
    "prompt-two-elements": Bad({"prompt": ["one", "two"]}, {}, ("'prompt'", "exactly one element")),
    "prompt-int32": Bad({"prompt": np.array([1, 2], dtype=np.int32)}, {}, ("'prompt'", "BYTES", "INT32")),
    "prompt-invalid-utf8": Bad({"prompt": [b"caf\xc3 \xff\xfe"]}, {}, ("'prompt'", "UTF-8")),
    "unknown-model": Bad(PROMPT, {}, ("'no-such-model'", "not found"), grpc.StatusCode.NOT_FOUND, "no-such-model"),
}
STREAMED = {
    "max_tokens-negative",
    "max_tokens-fills-window",
    "temperature-string",
    "top_p-over-one",
    "stop-not-json",
    "seed-negative",
    "unknown-parameter",
    "context-not-list-of-strings",
    "messages-unknown-role",
    "prompt-and-messages",
    "prompt-int32",
    "prompt-invalid-utf8",
    "unknown-model",
}
CASES = [pytest.param(row, "infer", id=f"infer-{name}") for name, row in ROWS.items()] + [
    pytest.param(ROWS[name], "stream", id=f"stream-{name}") for name in ROWS if name in STREAMED
]


@pytest.fixture(scope="module")
def llm(llm_service: Service) -> Iterator[InferenceClient]:
    with InferenceClient(llm_service.grpc_url, timeout=30.0, float_params="string") as client:
        yield client


@pytest.mark.parametrize(("bad", "via"), CASES)
def test_bad_request_names_what_is_wrong(llm: InferenceClient, bad: Bad, via: str) -> None:
    with pytest.raises(RagraphError) as info:
        if via == "infer":
            llm.infer(bad.model, bad.inputs, bad.params)
        else:
            list(llm.stream(bad.model, bad.inputs, bad.params, style="mlserver"))
    error = info.value
    assert error.code == bad.code, error.message
    for part in bad.mentions:
        assert part in error.message, f"{part!r} not in {error.message!r}"


def test_table_is_big_enough() -> None:
    assert len(ROWS) >= 14 and STREAMED <= set(ROWS)


def test_server_still_serves_after_bad_requests(llm_service: Service, llm: InferenceClient) -> None:
    generated = llm_service.metric("ragraph_llm_generated_tokens_total")
    response = llm.infer("llm", PROMPT, {**GREEDY, "max_tokens": 5})
    assert response.parameters["completion_tokens"] == 5
    assert response.parameters["finish_reason"] == "length"
    stream = list(llm.stream("llm", PROMPT, {**GREEDY, "max_tokens": 5}, style="mlserver"))
    assert stream[-1].parameters["completion_tokens"] == 5
    assert "".join(r.outputs[0].as_strings()[0] for r in stream) == response.outputs[0].as_strings()[0]
    # nothing left behind by the failed requests: no sequence running or queued (the engine
    # updates its gauges just after it answers, so poll), and only the two good requests above
    # generated tokens
    wait_for(lambda: llm_service.metric("ragraph_llm_running_sequences") == 0)
    wait_for(lambda: llm_service.metric("ragraph_llm_queue_depth") == 0)
    assert llm_service.metric("ragraph_llm_generated_tokens_total") - generated == 10


def completion_tokens(client: InferenceClient, params: dict[str, Any]) -> int:
    return int(client.infer("llm", PROMPT, params).parameters["completion_tokens"])


def text(client: InferenceClient, params: dict[str, Any]) -> str:
    return str(client.infer("llm", PROMPT, params).outputs[0].as_strings()[0])


def test_numbers_travel_as_int64_and_string_params(llm: InferenceClient) -> None:
    assert completion_tokens(llm, {**GREEDY, "max_tokens": 5}) == 5  # int64_param
    assert completion_tokens(llm, {**GREEDY, "max_tokens": "5"}) == 5  # string_param
    assert completion_tokens(llm, {**GREEDY, "max_tokens": 5.0}) == 5  # float -> string_param "5.0"
    greedy = text(llm, {"temperature": "0", "max_tokens": 5})
    # a float with float_params="string" goes out as string_param "0.0": greedy, same text
    assert text(llm, {"temperature": 0.0, "max_tokens": 5}) == greedy
    assert text(llm, {"temperature": "0.0", "max_tokens": "5"}) == greedy
    assert completion_tokens(llm, {"temperature": 0.0, "max_tokens": 5}) == 5


def test_double_params_are_dropped_by_mlserver(llm_service: Service, llm: InferenceClient) -> None:
    """With float_params="double" the client fills InferParameter.double_param (field 4 of the
    Open Inference Protocol's InferParameter). MLServer 1.7.1's InferParameter has only bool, int64
    and string, so the server parses field 4 as an unknown field and the parameter is gone: no
    error, the server's default applies. Checked here, not assumed:

    - temperature=-1.0 as a double is not rejected (the same value as a string is);
    - temperature=0.0 as a double is not greedy: the reply equals the one with no temperature
      at all (default_temperature 1.0, seeded sampling), not the greedy one;
    - max_tokens=5.0 as a double yields default_max_tokens (128) tokens, not 5.
    """
    with InferenceClient(llm_service.grpc_url, timeout=30.0, float_params="double") as doubles:
        with pytest.raises(RagraphError) as info:
            llm.infer("llm", PROMPT, {"temperature": -1.0, "max_tokens": 2})
        assert info.value.code == INVALID and "'temperature'" in info.value.message
        assert completion_tokens(doubles, {"temperature": -1.0, "max_tokens": 2}) == 2  # silently dropped

        seeded = {"max_tokens": 12, "seed": 7}
        default_sampled = text(doubles, seeded)
        greedy = text(doubles, {**seeded, "temperature": "0"})
        assert default_sampled != greedy, "precondition: seed 7 at temperature 1.0 is not the greedy text"
        assert text(doubles, {**seeded, "temperature": 0.0}) == default_sampled  # temperature dropped
        assert text(llm, {**seeded, "temperature": 0.0}) == greedy  # the same as a string_param is kept

        assert completion_tokens(doubles, {**GREEDY, "max_tokens": 5.0}) == 128  # default_max_tokens
