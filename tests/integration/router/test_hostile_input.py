"""Malformed and hostile requests against a running router, from raw gRPC and raw HTTP: each is
INVALID_ARGUMENT / HTTP 400 naming the field (never INTERNAL / 500), is refused before any node
is called, and the router goes on serving. Also the REST key gate: refusals counted and answered
under their request id, and a text log no caller's id can forge a line in."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from ragraph_client._generated import inference_pb2 as pb
from ragraph_client._generated import inference_pb2_grpc as pb_grpc

from tests.fixtures.rest import Reply, call, infer_body, parse_sse
from tests.fixtures.servers import Service, graph_env, start_router

QUESTION = "For how many months do we keep the first-of-month copies of the ledger database?"
FORGED = "2026-12-04 00:00:00,000 ERROR ragraph.router: forged"
HEX_ID = re.compile(r"[0-9a-f]{32}")
ID_RULE = "must be 1 to 128 printable ASCII characters without spaces ([!-~]), got "


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    from ragraph_router.access.keys import create_key, revoke_key

    path = tmp_path_factory.mktemp("hostile-keys") / "keys.json"
    good, _ = create_key(path, "hostile-tests")
    revoked, record = create_key(path, "revoked")
    revoke_key(path, record.id)
    return path, good, revoked


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory,
    encoder_service: Service,
    llm_service: Service,
    store_uri: str,
    key_file: tuple[Path, str, str],
) -> Iterator[Service]:
    env = graph_env(encoder_service, llm_service, store_uri, api_keys_file=str(key_file[0]), log_format="text")
    connect = {"api_key": key_file[1]}
    service = start_router(tmp_path_factory.mktemp("hostile") / "router.log", env, connect=connect)
    yield service
    service.stop()


@pytest.fixture()
def key(key_file: tuple[Path, str, str]) -> str:
    return key_file[1]


@pytest.fixture()
def stub(router: Service) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(router.grpc_url) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def question_request(**params: str) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="rag")
    message.inputs.add(name="question", datatype="BYTES", shape=[1]).contents.bytes_contents.append(QUESTION.encode())
    for name, value in params.items():
        message.parameters[name].string_param = value
    return message


def refused(stub: Any, message: pb.ModelInferRequest, key: str, metadata: tuple = ()) -> str:
    """The details of the INVALID_ARGUMENT the router answers ``message`` with."""
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(message, timeout=30, metadata=(("authorization", f"Bearer {key}"), *metadata))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return str(info.value.details())


def still_serving(router: Service, key: str) -> None:
    ok = call(router, "POST", "/v2/models/rag/infer", infer_body(QUESTION, {"max_tokens": 2}), key=key)
    assert ok.status == 200 and ok.body["parameters"]["completion_tokens"] == 2, ok.body


def post(router: Service, path: str, body: bytes, headers: dict[str, bytes | str]) -> Reply:
    """A raw HTTP POST: header values go out as the bytes given (curl -H would send them so)."""
    connection = http.client.HTTPConnection(router.http_url.split(":")[0], int(router.http_url.split(":")[1]), 60)
    try:
        connection.putrequest("POST", path)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        raw = response.read()
        got = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, got, json.loads(raw) if raw.startswith(b"{") else raw.decode())
    finally:
        connection.close()


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"inputs": ' + DEEP.encode() + b"}", "request body is nested deeper than 32 levels"),
        (
            json.dumps(infer_body(QUESTION, {"stop": json.loads("[" * 40 + "]" * 40)})).encode(),
            "request body is nested deeper than 32 levels (at ...[0][0]",
        ),
        (
            b'{"inputs": [{"name": "question", "shape": [1], "datatype": "BYTES", "data": ["\\ud800?"]}]}',
            "request body at inputs[0].data[0]: string holds a lone UTF-16 surrogate ('\\ud800' at character 0)",
        ),
        (
            json.dumps(infer_body(QUESTION, {"\ud83d": 1}), ensure_ascii=True).encode(),
            "request body at parameters.\\ud83d: string holds a lone UTF-16 surrogate",
        ),
        (b'{"inputs": [], "parameters": {"temperature": NaN}}', "request body is not valid JSON: NaN is not valid"),
        (
            json.dumps(infer_body(QUESTION, {"stop": "[" * 5000 + "]" * 5000})).encode(),
            "parameter 'stop' is nested deeper than 32 levels",
        ),
        (
            json.dumps(infer_body(QUESTION, {"filter": '{"a": ' * 3000 + "1" + "}" * 3000})).encode(),
            "filter is nested deeper than 32 levels",
        ),
        (
            json.dumps(infer_body(QUESTION, {"filter": '{"doc_id": "\\udfff"}'})).encode(),
            "filter at doc_id: string holds a lone UTF-16 surrogate",
        ),
        (
            json.dumps({"inputs": [{"name": "question", "shape": [1], "datatype": "UINT8", "data": [-1]}]}).encode(),
            "inputs[0] ('question').data: element 0 is -1, outside UINT8's range 0..255",
        ),
        (
            json.dumps({"inputs": [{"name": "question", "shape": [1], "datatype": "INT8", "data": [300]}]}).encode(),
            "inputs[0] ('question').data: element 0 is 300, outside INT8's range -128..127",
        ),
    ],
)
def test_rest_bodies_that_broke_the_decoders_are_400(router: Service, key: str, body: bytes, needle: str) -> None:
    reply = post(router, "/v2/models/rag/infer", body, {"Authorization": f"Bearer {key}"})
    assert reply.status == 400, reply.body
    assert needle in reply.body["error"] and reply.body["code"] == "INVALID_ARGUMENT", reply.body["error"]
    assert HEX_ID.fullmatch(reply.headers["x-request-id"])
    still_serving(router, key)


def test_the_llm_reads_caller_json_through_the_same_limits(llm_service: Service) -> None:
    """messages, stop and context straight to the LLM node (no router in front)."""
    from ragraph_client.client import InferenceClient
    from ragraph_client.errors import InvalidArgument

    hello = json.dumps([{"role": "user", "content": "hi"}])
    cases = [
        ({"messages": ["[" * 50_000 + "]" * 50_000]}, {}, "input 'messages' is nested deeper than 32 levels"),
        (
            {"messages": ['[{"role": "user", "content": "\\ud800"}]']},
            {},
            "input 'messages' at [0].content: string holds a lone UTF-16 surrogate",
        ),
        ({"messages": [hello]}, {"stop": "[" * 3000 + "]" * 3000}, "parameter 'stop' is nested deeper than 32"),
        (
            {"messages": [hello]},
            {"context": '["a", {"b": ' * 20 + "1" + "}]" * 20},
            "parameter 'context' is nested deeper than 32 levels",
        ),
    ]
    with InferenceClient(llm_service.grpc_url, timeout=30, float_params="string") as client:
        for inputs, params, needle in cases:
            with pytest.raises(InvalidArgument) as info:
                client.infer("llm", inputs, {"max_tokens": 2, **params})
            assert needle in info.value.message, info.value.message
        assert client.infer("llm", {"messages": [hello]}, {"max_tokens": 2}).parameters["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (
            {
                "$or": [
                    {"n": 1},
                    {
                        "$or": [
                            {"n": 2},
                            {
                                "$or": [
                                    {"n": 3},
                                    {
                                        "$or": [
                                            {"n": 4},
                                            {
                                                "$or": [
                                                    {"n": 5},
                                                    {
                                                        "$or": [
                                                            {"n": 6},
                                                            {
                                                                "$or": [
                                                                    {"n": 7},
                                                                    {"$or": [{"n": 8}, {"$or": [{"n": 9}, {"n": 10}]}]},
                                                                ]
                                                            },
                                                        ]
                                                    },
                                                ]
                                            },
                                        ]
                                    },
                                ]
                            },
                        ]
                    },
                ]
            },
            "$and/$or nested deeper than 8 levels",
        ),
        ({"doc_id": {"$in": [f"d{i}.md" for i in range(1025)]}}, "$in list holds 1025 values, more than 1024"),
        ({"$and": [{"chunk": {"$ne": i}} for i in range(129)]}, "more than 128 field conditions"),
        ({"chunk": 2**64}, "$eq integer 18446744073709551616 is outside signed 64 bits"),
        ({"chunk": {"$gte": -(2**80)}}, "$gte integer -1208925819614629174706176 is outside signed 64 bits"),
    ],
)
def test_filters_past_the_limits_are_refused_on_both_doors(
    router: Service, key: str, stub: Any, spec: dict, needle: str
) -> None:
    assert needle in refused(stub, question_request(filter=json.dumps(spec)), key)
    reply = call(router, "POST", "/v2/models/rag/infer", infer_body(QUESTION, {"filter": spec}), key=key)
    assert reply.status == 400 and needle in reply.body["error"], reply.body
    still_serving(router, key)


def test_typed_tensor_contents_out_of_range_over_raw_grpc(router: Service, key: str, stub: Any) -> None:
    cases = [
        ("question", "INT8", "int_contents", [300], "input 'question': element 0 is 300, outside INT8's range"),
        ("question", "UINT16", "uint_contents", [70000], "input 'question': element 0 is 70000, outside UINT16's"),
        ("x", "INT16", "int_contents", [-40000], "input 'x': element 0 is -40000, outside INT16's range"),
    ]
    for name, datatype, field, values, needle in cases:
        message = question_request() if name != "question" else pb.ModelInferRequest(model_name="rag")
        getattr(message.inputs.add(name=name, datatype=datatype, shape=[1]).contents, field).extend(values)
        assert needle in refused(stub, message, key)
    extra = question_request()
    extra.inputs.add(name="x", datatype="INT8", shape=[1]).contents.int_contents.append(1)
    assert refused(stub, extra, key) == "unknown input 'x': the rag model takes one input, 'question'"
    still_serving(router, key)


def test_bytes_that_are_no_message_are_invalid_argument(router: Service, key: str) -> None:
    """Invalid UTF-8 in a string field: protobuf cannot parse the message at all."""
    good = question_request(max_tokens="2")
    good.id = "utf8-probe"
    raw = good.SerializeToString().replace(b"utf8-probe", b"utf8-\xff\xfe\xfd\xfc\xfb")
    auth = (("authorization", f"Bearer {key}"),)
    expected = "the request is not a valid inference.ModelInferRequest message (Error parsing message"
    with grpc.insecure_channel(router.grpc_url) as channel:
        unary = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        streaming = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        for call in (lambda: unary(raw, timeout=30, metadata=auth), lambda: list(streaming(iter([raw]), timeout=30))):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert str(info.value.details()).startswith(expected), info.value.details()
        assert pb.ModelInferResponse.FromString(unary(good.SerializeToString(), timeout=60, metadata=auth)).id == (
            "utf8-probe"
        )


def test_request_ids_outside_the_charset_are_refused_over_grpc(router: Service, key: str, stub: Any) -> None:
    for bad in ("a\nb", "évian", "x" * 129, "two words", ""):
        message = question_request()
        message.id = bad
        if bad:
            details = refused(stub, message, key)
            assert details.startswith(f"id {ID_RULE}"), details
    for bad in ("two words", "y" * 200):
        details = refused(stub, question_request(), key, metadata=(("x-request-id", bad),))
        assert details.startswith(f"header x-request-id {ID_RULE}{bad[:40]!r}"), details
    good = question_request(max_tokens="2")
    good.id = "grpc-probe-ok:1"
    reply = stub.ModelInfer(good, timeout=60, metadata=(("authorization", f"Bearer {key}"),))
    assert reply.id == "grpc-probe-ok:1"


def test_request_ids_outside_the_charset_are_refused_over_rest(router: Service, key: str) -> None:
    body = json.dumps(infer_body(QUESTION, {"max_tokens": 2})).encode()
    auth = {"Authorization": f"Bearer {key}"}
    control = post(router, "/v2/models/rag/infer", body, {**auth, "x-request-id": b"a\x7fb"})
    assert control.status == 400  # refused by aiohttp's HTTP parser itself, before any handler
    for header, shown in [(b"\xc3\xa9vian", "'\\xe9vian'"), (b"tab\tbed", "'tab\\tbed'"), (b"z" * 300, "'" + "z" * 40)]:
        reply = post(router, "/v2/models/rag/infer", body, {**auth, "x-request-id": header})
        assert reply.status == 400, reply.body
        assert reply.body["error"].startswith(f"header x-request-id {ID_RULE}{shown}"), reply.body["error"]
        assert HEX_ID.fullmatch(reply.headers["x-request-id"])  # a fresh id, never the bad one echoed
    forged = json.dumps(infer_body(QUESTION, {"max_tokens": 2}, id="ok\n" + FORGED)).encode()
    for path in ("infer", "generate_stream"):
        payload = forged if path == "infer" else json.dumps({"question": QUESTION, "id": "x\r\ny"}).encode()
        reply = post(router, f"/v2/models/rag/{path}", payload, auth)
        assert reply.status == 400 and reply.body["error"].startswith(f"id {ID_RULE}"), reply.body
        assert HEX_ID.fullmatch(reply.headers["x-request-id"])
    assert not any(line.startswith(FORGED) for line in router.log().splitlines())
    still_serving(router, key)


@pytest.mark.parametrize(
    ("parameters", "needle"),
    [
        ({"max_tokens": -1}, "parameter 'max_tokens' must be an integer from 1 to 2**63-1, got -1"),
        ({"top_p": 5}, "parameter 'top_p' must be a finite number in (0, 1], got 5"),
        ({"max_tokens": 100_000}, "node generate (llm@"),  # the LLM's own limit: refused before the status line
        ({"no_such": 1}, "unknown parameter 'no_such': the rag model takes "),
    ],
)
def test_sse_refusals_are_plain_http_errors(router: Service, key: str, parameters: dict, needle: str) -> None:
    reply = call(
        router, "POST", "/v2/models/rag/generate_stream", {"question": QUESTION, "parameters": parameters}, key=key
    )
    assert reply.status == 400, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.body["error"].startswith(needle) and reply.body["code"] == "INVALID_ARGUMENT", reply.body
    ok = call(
        router,
        "POST",
        "/v2/models/rag/generate_stream",
        {"question": QUESTION, "parameters": {"max_tokens": 4}},
        key=key,
    )
    assert ok.status == 200 and ok.headers["content-type"].startswith("text/event-stream")
    frames = [data for _, data in parse_sse(ok.body)]
    assert "sources" in frames[0] and "label" in frames[-1] and all("answer" in f for f in frames[1:-1])


def test_key_gate_refusals_are_counted_and_carry_the_request_id(
    router: Service, key_file: tuple[Path, str, str]
) -> None:
    def count(method: str, code: str) -> float:
        return router.metric("ragraph_router_requests_total", f'code="{code}",method="{method}"')

    _, good, revoked = key_file
    body = infer_body(QUESTION, {"max_tokens": 2})
    before = {m: count(m, "UNAUTHENTICATED") for m in ("RestInfer", "RestGenerate", "RestGenerateStream")}
    reply = call(router, "POST", "/v2/models/rag/infer", body, key=revoked, headers={"x-request-id": "probe-401"})
    assert reply.status == 401 and "revoked" in reply.body["error"] and reply.headers["x-request-id"] == "probe-401"
    anonymous = call(router, "POST", "/v2/models/rag/generate", {"question": QUESTION})
    assert anonymous.status == 401 and HEX_ID.fullmatch(anonymous.headers["x-request-id"])
    stream = call(router, "POST", "/v2/models/rag/generate_stream", {"question": QUESTION}, key="rgk_nope_nope")
    assert stream.status == 401 and stream.headers["x-request-id"]
    assert count("RestInfer", "UNAUTHENTICATED") == before["RestInfer"] + 1
    assert count("RestGenerate", "UNAUTHENTICATED") == before["RestGenerate"] + 1
    assert count("RestGenerateStream", "UNAUTHENTICATED") == before["RestGenerateStream"] + 1
    assert any("[probe-401]: rejected API key" in line and "revoked" in line for line in router.log().splitlines())
    # a body that cannot be read is counted as well, under its method
    bad_before = count("RestInfer", "INVALID_ARGUMENT")
    assert call(router, "POST", "/v2/models/rag/infer", b"{junk", key=good).status == 400
    assert count("RestInfer", "INVALID_ARGUMENT") == bad_before + 1
    metadata = call(router, "GET", "/v2/models/rag", headers={"x-request-id": "meta-1"})
    assert metadata.status == 401 and metadata.headers["x-request-id"] == "meta-1"
    still_serving(router, good)
