"""Bad requests against the real encoder service, sent as raw V2 protobuf messages.

Every row must come back with the right gRPC status (never INTERNAL/UNKNOWN) and a message that
names the offending input, parameter or model; afterwards the server must still answer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from ragraph_client._generated import inference_pb2 as pb
from ragraph_client._generated import inference_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

# ~2000 tokens: far over the model's max_seq_length of 256.
LONG_TEXT = " ".join(["word"] * 2000)


@pytest.fixture(scope="module")
def stub(encoder_service: Any) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    with grpc.insecure_channel(encoder_service.grpc_url, options=options) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def pack(items: list[bytes]) -> bytes:
    """BYTES in raw form: 4-byte little-endian length, then the bytes, per element."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def request(
    model: str = "encoder",
    *,
    name: str = "text",
    datatype: str = "BYTES",
    shape: tuple[int, ...] = (1,),
    typed: list[bytes] | None = None,
    raw: list[bytes] | None = None,
    params: dict[str, bool | int | str] | None = None,
    version: str = "",
) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model, model_version=version)
    tensor = message.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if typed is not None:
        tensor.contents.bytes_contents.extend(typed)
    if raw is not None:
        message.raw_input_contents.extend(raw)
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            message.parameters[key].bool_param = value
        elif isinstance(value, int):
            message.parameters[key].int64_param = value
        else:
            message.parameters[key].string_param = value
    return message


def _fp32_typed() -> pb.ModelInferRequest:
    message = request(datatype="FP32")
    message.inputs[0].contents.fp32_contents.append(1.0)
    return message


def _raw_entries_short() -> pb.ModelInferRequest:
    message = request(raw=[pack([b"a"])])
    message.inputs.add(name="extra", datatype="BYTES", shape=[1])
    return message


def _duplicate_inputs() -> pb.ModelInferRequest:
    message = request(raw=[pack([b"a"])])
    message.inputs.add(name="text", datatype="BYTES", shape=[1])
    message.raw_input_contents.append(pack([b"b"]))
    return message


def _no_inputs() -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="encoder")


@dataclass
class Case:
    build: Callable[[], pb.ModelInferRequest]
    code: grpc.StatusCode
    needles: tuple[str, ...]  # every one must occur in the status details


def case(
    id: str, build: Callable[[], pb.ModelInferRequest], code: grpc.StatusCode, *needles: str, marks: Any = ()
) -> Any:
    return pytest.param(Case(build, code, needles), id=id, marks=marks)


CASES = [
    case(
        "unknown-model",
        lambda: request("no-such-model", raw=[pack([b"hi"])]),
        NOT_FOUND,
        "'no-such-model'",
        "not found",
    ),
    case(
        "unknown-model-version", lambda: request(raw=[pack([b"hi"])], version="99"), NOT_FOUND, "'encoder'", "not found"
    ),
    case("empty-model-name", lambda: request("", raw=[pack([b"hi"])]), INVALID, "model_name", "empty"),
    case(
        "unknown-datatype-raw",
        lambda: request(datatype="FOO", raw=[pack([b"hi"])]),
        INVALID,
        "'text'",
        "unknown datatype 'FOO'",
    ),
    case(
        "unknown-datatype-typed",
        lambda: request(datatype="FOO", typed=[b"hi"]),
        INVALID,
        "'text'",
        "unknown datatype 'FOO'",
    ),
    case(
        "fp32-not-bytes-raw",
        lambda: request(datatype="FP32", raw=[struct.pack("<f", 1.0)]),
        INVALID,
        "'text'",
        "must be BYTES",
        "FP32",
    ),
    case("fp32-not-bytes-typed", _fp32_typed, INVALID, "'text'", "must be BYTES", "FP32"),
    case(
        "fp32-not-bytes-classifier",
        lambda: request("classifier", datatype="FP32", raw=[struct.pack("<f", 1.0)]),
        INVALID,
        "'text'",
        "must be BYTES",
    ),
    case("fp16-typed", lambda: request(datatype="FP16"), INVALID, "'text'", "raw_input_contents"),
    case(
        "shape-vs-typed-count",
        lambda: request(shape=(2,), typed=[b"a"]),
        INVALID,
        "'text'",
        "holds 2 elements",
        "contents hold 1",
    ),
    case(
        "shape-vs-raw-count",
        lambda: request(shape=(3,), raw=[pack([b"a", b"b"])]),
        INVALID,
        "'text'",
        "3 elements",
        "raw data holds 2",
    ),
    case("raw-entries-fewer-than-inputs", _raw_entries_short, INVALID, "raw_input_contents", "1 entries for 2 inputs"),
    case(
        "raw-entries-more-than-inputs",
        lambda: request(raw=[pack([b"a"]), pack([b"b"])]),
        INVALID,
        "raw_input_contents",
        "2 entries for 1 inputs",
    ),
    case(
        "typed-mixed-with-raw",
        lambda: request(typed=[b"a"], raw=[pack([b"a"])]),
        INVALID,
        "'text'",
        "typed contents given together with raw_input_contents",
    ),
    case("raw-truncated-length-prefix", lambda: request(raw=[b"\x05\x00"]), INVALID, "'text'", "length prefix"),
    case("raw-element-overruns", lambda: request(raw=[b"\x05\x00\x00\x00ab"]), INVALID, "'text'", "claims 5 bytes"),
    case("negative-dim", lambda: request(shape=(-1,), raw=[pack([b"a"])]), INVALID, "'text'", "negative dimension"),
    case("huge-dims-raw", lambda: request(shape=(2**62, 4), raw=[pack([b"a"])]), INVALID, "'text'", "raw data holds 1"),
    case("duplicate-input-name", _duplicate_inputs, INVALID, "'text'", "more than once"),
    case("missing-input-text", lambda: request(name="txt", raw=[pack([b"a"])]), INVALID, "missing input 'text'"),
    case("no-inputs", _no_inputs, INVALID, "missing input 'text'"),
    case(
        "invalid-utf8-raw",
        lambda: request(raw=[pack([b"ok", b"\xff\xfe"])], shape=(2,)),
        INVALID,
        "'text'",
        "element 1",
        "UTF-8",
    ),
    case("invalid-utf8-typed", lambda: request(typed=[b"\xc3\x28"]), INVALID, "'text'", "element 0", "UTF-8"),
    case("empty-batch-raw", lambda: request(shape=(0,), raw=[b""]), INVALID, "'text'", "empty batch"),
    case("empty-batch-typed", lambda: request(shape=(0,)), INVALID, "'text'", "empty batch"),
    case(
        "too-many-texts",
        lambda: request(shape=(1025,), raw=[pack([b"x"] * 1025)]),
        INVALID,
        "'text'",
        "1025 texts",
        "limit of 1024",
    ),
    case(
        "too-many-texts-n1",
        lambda: request(shape=(1025, 1), raw=[pack([b"x"] * 1025)]),
        INVALID,
        "'text'",
        "1025 texts",
        "limit of 1024",
    ),
    # 1000 x 4200 bytes = 4,200,000 > 4 MiB of text, in a ~4 MB gRPC message
    case(
        "over-size-request",
        lambda: request(shape=(1000,), raw=[pack([b"a" * 4200] * 1000)]),
        INVALID,
        "'text'",
        "4200000 bytes",
        "limit of 4194304",
    ),
    case(
        "rank-2-wrong-width",
        lambda: request(shape=(1, 2), raw=[pack([b"a", b"b"])]),
        INVALID,
        "'text'",
        "shape [N] or [N, 1]",
        "[1, 2]",
    ),
    case(
        "rank-3",
        lambda: request(shape=(1, 1, 1), raw=[pack([b"a"])]),
        INVALID,
        "'text'",
        "shape [N] or [N, 1]",
        "[1, 1, 1]",
    ),
    case(
        "over-long-text-truncate-false",
        lambda: request(raw=[pack([LONG_TEXT.encode()])], params={"truncate": False}),
        INVALID,
        "'text'",
        "max_seq_length",
        "256",
        "truncate=false",
    ),
    case(
        "normalize-not-bool-string",
        lambda: request(raw=[pack([b"a"])], params={"normalize": "maybe"}),
        INVALID,
        "'normalize'",
        "boolean",
        "'maybe'",
    ),
    case(
        "normalize-not-bool-int",
        lambda: request(raw=[pack([b"a"])], params={"normalize": 2}),
        INVALID,
        "'normalize'",
        "boolean",
    ),
    case(
        "truncate-not-bool",
        lambda: request(raw=[pack([b"a"])], params={"truncate": "maybe"}),
        INVALID,
        "'truncate'",
        "boolean",
    ),
    case(
        "unknown-parameter",
        lambda: request(raw=[pack([b"a"])], params={"normalise": False}),
        INVALID,
        "unknown parameter 'normalise'",
        "normalize",
        "truncate",
        "priority",
    ),
    case(
        "classifier-unknown-parameter",
        lambda: request("classifier", raw=[pack([b"a"])], params={"label_set": "query_guard"}),
        INVALID,
        "unknown parameter 'label_set'",
        "labelset",
    ),
    case(
        "unknown-labelset",
        lambda: request("classifier", raw=[pack([b"a"])], params={"labelset": "nope"}),
        INVALID,
        "'labelset'",
        "'nope'",
        "query_guard",
    ),
    case(
        "labelset-not-string",
        lambda: request("classifier", raw=[pack([b"a"])], params={"labelset": 3}),
        INVALID,
        "'labelset'",
        "string",
    ),
    case(
        "classifier-bad-rank",
        lambda: request("classifier", shape=(1, 2), raw=[pack([b"a", b"b"])]),
        INVALID,
        "'text'",
        "shape [N] or [N, 1]",
    ),
]


def assert_still_serving(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    for model in ("encoder", "classifier"):
        assert stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=10).ready
    reply = stub.ModelInfer(request(raw=[pack([b"still here"])]), timeout=30)
    assert [list(o.shape) for o in reply.outputs] == [[1, 384]]


@pytest.mark.parametrize("bad", CASES)
def test_bad_request_is_rejected(stub: pb_grpc.GRPCInferenceServiceStub, bad: Case) -> None:
    message = bad.build()
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(message, timeout=60)
    err = info.value
    code, details = err.code(), err.details() or ""
    try:
        assert code == bad.code, f"got {code.name}: {details!r}"
        for needle in bad.needles:
            assert needle in details, f"{needle!r} not in {details!r}"
    finally:
        assert_still_serving(stub)


def test_good_request_still_succeeds(stub: pb_grpc.GRPCInferenceServiceStub, encoder_client: Any) -> None:
    reply = stub.ModelInfer(request(shape=(2,), raw=[pack([b"hello world", "grüße".encode()])]), timeout=30)
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [("embedding", "FP32", [2, 384])]
    vectors = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    response = encoder_client.infer("encoder", {"text": ["hello world", "grüße"]})
    embedding = response.output("embedding").as_numpy()
    assert embedding.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedding, vectors, atol=1e-5)


@pytest.mark.parametrize("form", ["raw", "typed"])
def test_over_long_text_is_truncated_by_default(stub: pb_grpc.GRPCInferenceServiceStub, form: str) -> None:
    if form == "raw":
        message = request(raw=[pack([LONG_TEXT.encode(), b"short"])], shape=(2,))
    else:
        message = request(typed=[LONG_TEXT.encode(), b"short"], shape=(2,))
    reply = stub.ModelInfer(message, timeout=60)
    assert reply.parameters["truncated"].WhichOneof("parameter_choice") == "int64_param"
    assert reply.parameters["truncated"].int64_param == 1
    assert [list(o.shape) for o in reply.outputs] == [[2, 384]]
