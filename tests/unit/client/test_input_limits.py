"""The shared readers of caller input: JSON under limits, integer tensors in range, parameters
that fit no protobuf field, request ids, and log lines a caller's text cannot split."""

from __future__ import annotations

import io
import logging

import pytest
from ragraph_client import convert, jsontext, logs
from ragraph_client._generated import inference_pb2 as pb
from ragraph_client.errors import InvalidArgument
from ragraph_client.params import get_json
from ragraph_client.tensors import to_array
from ragraph_client.wire import param_to_pb, params_to_pb


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[" * 5000 + "]" * 5000, "x is nested deeper than 32 levels"),  # past Python's recursion limit
        ("[" * 33 + "]" * 33, "x is nested deeper than 32 levels (at ...[0][0]"),  # past ours only
        ('{"a": {"b": ["\\ud800"]}}', "x at a.b[0]: string holds a lone UTF-16 surrogate ('\\ud800'"),
        ('{"\\udfff": 1}', "x at \\udfff: string holds a lone UTF-16 surrogate"),
        ("NaN", "x is not valid JSON: NaN is not valid JSON"),
        ('{"t": -Infinity}', "x is not valid JSON: -Infinity is not valid JSON"),
        ('{"a": 1', "x is not valid JSON: Expecting ',' delimiter at position 7"),
        (b"\xff\xfe\xfa", "x is not valid JSON"),
    ],
)
def test_json_past_a_limit_is_invalid_argument(text: str | bytes, needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        jsontext.loads(text, "x")
    assert needle in info.value.message


def test_json_within_the_limits_reads() -> None:
    assert jsontext.loads("[" * 32 + "]" * 32, "x") == eval("[" * 32 + "]" * 32)
    assert jsontext.loads('{"emoji": "\\ud83d\\ude00", "n": 1e3}', "x") == {"emoji": "😀", "n": 1000.0}
    deep = '{"a": ' * 31 + "1" + "}" * 31
    assert jsontext.loads(deep, "x") is not None


def test_parameters_read_json_through_the_limits() -> None:
    with pytest.raises(InvalidArgument, match="parameter 'stop' is nested deeper than 32 levels"):
        get_json({"stop": "[" * 2000 + "]" * 2000}, "stop", [])
    with pytest.raises(InvalidArgument, match="parameter 'context' at \\[0\\]: string holds a lone"):
        get_json({"context": '["\\ud800"]'}, "context", [])


@pytest.mark.parametrize(
    ("datatype", "field", "values", "needle"),
    [
        ("INT8", "int_contents", [1, 300], "input 'x': element 1 is 300, outside INT8's range -128..127"),
        ("INT8", "int_contents", [-129], "element 0 is -129, outside INT8's range"),
        ("INT16", "int_contents", [40000], "element 0 is 40000, outside INT16's range -32768..32767"),
        ("UINT8", "uint_contents", [256], "element 0 is 256, outside UINT8's range 0..255"),
        ("UINT16", "uint_contents", [70000], "element 0 is 70000, outside UINT16's range 0..65535"),
    ],
)
def test_typed_contents_out_of_range_are_invalid_argument(
    datatype: str, field: str, values: list[int], needle: str
) -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype, shape=[len(values)])
    getattr(tensor.contents, field).extend(values)
    with pytest.raises(InvalidArgument) as info:
        convert.request_from_pb(message)
    assert needle in info.value.message


def test_typed_contents_in_range_decode() -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="INT8", shape=[2])
    tensor.contents.int_contents.extend([-128, 127])
    assert convert.request_from_pb(message).input("x").as_numpy().tolist() == [-128, 127]


@pytest.mark.parametrize(
    ("datatype", "items", "needle"),
    [
        ("UINT8", [-1], "element 0 is -1, outside UINT8's range"),
        ("UINT8", [2.5], "element 0 is 2.5, not an integer (UINT8)"),
        ("INT32", [True], "element 0 is True, not an integer (INT32)"),
        ("INT64", [2**63], "element 0 is 9223372036854775808, outside INT64's range"),
        ("UINT64", [-1, 2**64 - 1], "element 0 is -1, outside UINT64's range"),
    ],
)
def test_to_array_refuses_what_the_datatype_cannot_hold(datatype: str, items: list, needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        to_array(datatype, items, "inputs[0].data")
    assert needle in info.value.message
    assert to_array("UINT64", [2**64 - 1], "x").tolist() == [2**64 - 1]


def test_integers_beyond_int64_are_converted_or_refused_never_dropped() -> None:
    ours = pb.ModelInferRequest()
    params_to_pb({"a": 2**63, "b": -1, "c": 0.5}, ours.parameters)
    assert ours.parameters["a"].uint64_param == 2**63 and ours.parameters["b"].int64_param == -1
    assert ours.parameters["c"].double_param == 0.5
    strings = pb.ModelInferRequest()
    params_to_pb({"a": 2**63, "b": -(2**70), "c": 0.5}, strings.parameters, floats="string")
    assert strings.parameters["a"].string_param == str(2**63)
    assert strings.parameters["b"].string_param == str(-(2**70))
    assert strings.parameters["c"].string_param == "0.5"
    with pytest.raises(InvalidArgument, match="parameter 'max_tokens': 18446744073709551616 fits neither"):
        params_to_pb({"max_tokens": 2**64}, pb.ModelInferRequest().parameters)
    with pytest.raises(InvalidArgument, match="fits neither int64 nor uint64"):
        param_to_pb(-(2**63) - 1, pb.ModelInferRequest().parameters["x"])


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("a\nb", "'a\\nb' (3 characters)"),
        ("évian", "'\\xe9vian' (5 characters)"),
        ("two words", "'two words' (9 characters)"),
        ("x" * 129, "'" + "x" * 40 + "'... (129 characters)"),
        ("tab\there", "'tab\\there' (8 characters)"),
    ],
)
def test_request_ids_outside_the_charset_are_refused(value: str, shown: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        logs.check_request_id(value, "header x-request-id")
    assert info.value.message == (
        "header x-request-id must be 1 to 128 printable ASCII characters without spaces ([!-~]), got " + shown
    )


def test_request_ids_in_the_charset_pass() -> None:
    for value in ("q1", "9f1c2b7e-1b2c-4d5e-8f90-0123456789ab", "x" * 128, "a:b/c@d=e+f~g!", logs.new_request_id()):
        assert logs.check_request_id(value, "id") == value


def test_text_logs_keep_one_record_on_one_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    logger = logging.getLogger("ragraph.test.text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = logs.request_id.set("evil\n2026-12-04 10:00:00,000 ERROR ragraph.router: fake")
        logger.warning("question %s", "one\r\ntwo\x1b[31m")
        logs.request_id.reset(token)
        logger.warning("no id here")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(
        "WARNING ragraph.test.text [evil\\n2026-12-04 10:00:00,000 ERROR ragraph.router: fake]: "
        "question one\\r\\ntwo\\x1b[31m"
    )
    assert lines[1].endswith("WARNING ragraph.test.text: no id here")
