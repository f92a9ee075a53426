"""Nothing a caller sends is dropped without a word: every generation parameter the rag model
documents reaches the LLM and takes effect (or is refused up front), whatever protobuf field it
came in; unknown parameters, model versions and outputs are refused naming what exists. Real
router, encoder and tiny LLM processes; raw gRPC where the field matters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from ragraph_client._generated import inference_pb2 as pb
from ragraph_client._generated import inference_pb2_grpc as pb_grpc
from ragraph_client.client import InferenceClient, make_request
from ragraph_client.errors import InvalidArgument, NotFound

from tests.fixtures.servers import Service, graph_env, start_router

QUESTION = "For how many months do we keep the first-of-month copies of the ledger database?"
TAKES = (
    "debug, filter, max_tokens, namespace, no_repeat_ngram_size, repetition_penalty, seed, stop, temperature, "
    "top_k, top_k_tokens, top_p"
)


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory, encoder_service: Service, llm_service: Service, store_uri: str
) -> Iterator[Service]:
    env = graph_env(encoder_service, llm_service, store_uri)
    service = start_router(tmp_path_factory.mktemp("forwarding") / "router.log", env)
    yield service
    service.stop()


@pytest.fixture()
def client(router: Service) -> Iterator[InferenceClient]:
    with InferenceClient(router.grpc_url, timeout=60) as c:
        yield c


@pytest.fixture()
def stub(router: Service) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(router.grpc_url) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def answer(client: InferenceClient, **params: Any) -> tuple[str, dict[str, Any]]:
    reply = client.infer("rag", {"question": [QUESTION]}, params)
    return reply.output("answer").as_strings()[0], reply.parameters


def raw_request(**params: Any) -> pb.ModelInferRequest:
    """A ModelInferRequest built field by field; ``params`` values are (field, value) pairs."""
    message = pb.ModelInferRequest(model_name="rag")
    tensor = message.inputs.add(name="question", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(QUESTION.encode())
    for name, (field, value) in params.items():
        setattr(message.parameters[name], field, value)
    return message


def raw_answer(stub: pb_grpc.GRPCInferenceServiceStub, message: pb.ModelInferRequest) -> tuple[str, dict[str, Any]]:
    reply = stub.ModelInfer(message, timeout=60)
    names = [o.name for o in reply.outputs]
    text = reply.raw_output_contents[names.index("answer")][4:].decode()
    params = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in reply.parameters.items()}
    return text, params


def test_every_generation_parameter_takes_effect(client: InferenceClient) -> None:
    greedy, _ = answer(client, max_tokens=24, temperature=0.0)
    # seed: the same seed samples the same answer, another seed another one
    first, _ = answer(client, max_tokens=24, temperature=1.0, seed=11)
    assert answer(client, max_tokens=24, temperature=1.0, seed=11)[0] == first
    assert answer(client, max_tokens=24, temperature=1.0, seed=12)[0] != first
    assert first != greedy
    # top_k_tokens reaches the LLM as top_k: one candidate per step is greedy, at any temperature
    assert answer(client, max_tokens=24, temperature=1.0, seed=11, top_k_tokens=1)[0] == greedy
    # top_p: a tiny nucleus keeps only the likeliest token: greedy too
    assert answer(client, max_tokens=24, temperature=1.0, seed=11, top_p=1e-9)[0] == greedy
    # stop: the answer ends before the stop string, finish_reason stop
    stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 3]
    assert stop.strip(), greedy
    cut, params = answer(client, max_tokens=24, temperature=0.0, stop=json.dumps([stop]))
    assert cut == greedy[: greedy.index(stop)] and params["finish_reason"] == "stop"
    # the repetition controls change what greedy decoding picks once a token repeats
    assert answer(client, max_tokens=24, temperature=0.0, no_repeat_ngram_size=1)[0] != greedy
    assert answer(client, max_tokens=24, temperature=0.0, repetition_penalty=10.0)[0] != greedy


def test_every_protobuf_field_is_read_or_refused(
    client: InferenceClient, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    """uint64_param and double_param, which MLServer's InferParameter lacks, reach the LLM
    converted (an int, a float as a string); a value no node field can hold is refused."""
    greedy, _ = answer(client, max_tokens=5, temperature=0.0)
    text, params = raw_answer(stub, raw_request(max_tokens=("uint64_param", 5), temperature=("double_param", 0.0)))
    assert params["completion_tokens"] == 5 and text == greedy
    text, params = raw_answer(stub, raw_request(max_tokens=("string_param", "5"), temperature=("string_param", "0")))
    assert params["completion_tokens"] == 5 and text == greedy
    _, params = raw_answer(stub, raw_request(max_tokens=("int64_param", 3), top_k=("uint64_param", 1)))
    assert params["completion_tokens"] == 3
    for message, needle in [
        (raw_request(max_tokens=("uint64_param", 2**64 - 1)), "parameter 'max_tokens' must be an integer from 1"),
        (raw_request(seed=("uint64_param", 2**63)), "parameter 'seed' must be an integer from 0 to 2**63-1"),
        (raw_request(top_p=("double_param", 5.0)), "parameter 'top_p' must be a finite number in (0, 1], got 5.0"),
        (raw_request(temperature=("double_param", float("nan"))), "parameter 'temperature' must be a finite"),
        (raw_request(top_k=("uint64_param", 2**64 - 1)), "parameter 'top_k' must be between 1 and 50"),
        (raw_request(debug=("double_param", 0.5)), "parameter 'debug' must be a boolean, got 0.5"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(message, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert needle in (info.value.details() or ""), info.value.details()
    assert answer(client, max_tokens=2)[1]["completion_tokens"] == 2  # still serving


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"top_p": 5}, "parameter 'top_p' must be a finite number in (0, 1], got 5"),
        ({"max_tokens": -1}, "parameter 'max_tokens' must be an integer from 1 to 2**63-1, got -1"),
        ({"top_k_tokens": -2}, "parameter 'top_k_tokens' must be an integer from 0 to 2**63-1, got -2"),
        ({"stop": "END"}, "parameter 'stop' is not valid JSON: Expecting value at position 0"),
        ({"repetition_penalty": 11.0}, "parameter 'repetition_penalty' must be a finite number in (0, 10], got "),
        ({"frequency_penalty": 0.5}, f"unknown parameter 'frequency_penalty': the rag model takes {TAKES}"),
        ({"topk": 3}, f"unknown parameter 'topk': the rag model takes {TAKES}"),
    ],
)
def test_bad_and_unknown_parameters_are_refused_before_any_node(
    client: InferenceClient, router: Service, params: dict[str, Any], message: str
) -> None:
    guard = router.metric("ragraph_router_node_seconds_count", 'node="guard"')
    with pytest.raises(InvalidArgument) as info:
        client.infer("rag", {"question": [QUESTION]}, params)
    assert info.value.message.startswith(message), info.value.message
    with pytest.raises(InvalidArgument) as streamed:
        list(client.stream("rag", {"question": [QUESTION]}, params))
    assert streamed.value.message.startswith(message)
    assert router.metric("ragraph_router_node_seconds_count", 'node="guard"') == guard  # no node was called
    assert answer(client, max_tokens=2)[1]["completion_tokens"] == 2


def test_the_llm_limit_still_comes_from_the_llm(client: InferenceClient) -> None:
    with pytest.raises(InvalidArgument) as info:
        answer(client, max_tokens=100_000)
    assert info.value.message.startswith("node generate (llm@")
    assert "parameter 'max_tokens' is 100000, more than this server's limit" in info.value.message


def test_model_versions_are_the_listed_ones(client: InferenceClient, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert client.metadata("rag").versions == ["1"] and client.metadata("rag", version="1").name == "rag"
    assert client.model_ready("rag", version="1")
    message = raw_request(max_tokens=("int64_param", 2))
    message.model_version = "1"
    assert raw_answer(stub, message)[1]["completion_tokens"] == 2
    expected = "model 'rag' has no version '7' (versions: 1)"
    message.model_version = "7"
    calls = [
        lambda: stub.ModelInfer(message, timeout=30),
        lambda: list(stub.ModelStreamInfer(iter([message]), timeout=30)),
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="rag", version="7"), timeout=30),
        lambda: stub.ModelReady(pb.ModelReadyRequest(name="rag", version="7"), timeout=30),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details() == expected
    versioned = make_request("rag", {"question": [QUESTION]}, {"max_tokens": 2}, version="2")
    with pytest.raises(NotFound, match="has no version '2'"):
        client.infer_request(versioned)


def test_requested_outputs_are_checked_and_honoured(
    client: InferenceClient, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    message = raw_request(max_tokens=("int64_param", 3))
    message.outputs.add(name="answer")
    message.outputs.add(name="guard")
    reply = stub.ModelInfer(message, timeout=60)
    assert [o.name for o in reply.outputs] == ["answer", "guard"]
    streamed = list(stub.ModelStreamInfer(iter([message]), timeout=60))
    names = [[o.name for o in m.infer_response.outputs] for m in streamed]
    assert names[0] == ["answer"] and names[-1] == ["guard"] and all(n == ["answer"] for n in names[:-1])
    assert streamed[-1].infer_response.parameters["triton_final_response"].bool_param
    message.outputs.add(name="embedding")
    for streaming in (False, True):
        with pytest.raises(grpc.RpcError) as info:
            if streaming:
                list(stub.ModelStreamInfer(iter([message]), timeout=30))
            else:
                stub.ModelInfer(message, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == (
            "outputs[2].name: model 'rag' has no output 'embedding' (it has answer, sources, label, guard)"
        )
    assert answer(client, max_tokens=2)[1]["completion_tokens"] == 2
