from __future__ import annotations

import numpy as np
import pytest
from ragraph_client import convert
from ragraph_client.errors import InvalidArgument
from ragraph_client.params import get_bool, get_float, get_int, get_json
from ragraph_client.tensors import InferRequest, InferResponse, Tensor, pack_bytes, unpack_bytes


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array([[1, -2], [3, 4]], dtype=np.int64),
        np.array([True, False, True]),
        np.arange(6, dtype=np.uint8),
        np.array([0.5, -1.25], dtype=np.float16),
        np.arange(4, dtype=np.float64).reshape(2, 2),
    ],
)
@pytest.mark.parametrize("raw", [True, False])
def test_numeric_round_trip(array: np.ndarray, raw: bool) -> None:
    if array.dtype == np.float16 and not raw:
        pytest.skip("FP16 travels raw only")
    request = InferRequest("m", [Tensor.from_numpy("x", array)], {"a": 1, "b": True, "c": "s", "d": 0.5})
    message = convert.request_to_pb(request, raw=raw)
    assert bool(message.raw_input_contents) == raw
    back = convert.request_from_pb(message)
    assert back.parameters == {"a": 1, "b": True, "c": "s", "d": 0.5}
    np.testing.assert_array_equal(back.input("x").as_numpy(), array)
    assert back.input("x").as_numpy().dtype == array.dtype


def test_raw_is_little_endian() -> None:
    message = convert.request_to_pb(InferRequest("m", [Tensor.from_numpy("x", np.array([1], dtype=">i4"))]))
    assert message.raw_input_contents[0] == b"\x01\x00\x00\x00"


@pytest.mark.parametrize("raw", [True, False])
def test_strings_round_trip(raw: bool) -> None:
    texts = ["héllo", "", "wörld ✓"]
    response = InferResponse("m", [Tensor.from_strings("t", texts)])
    back = convert.response_from_pb(convert.response_to_pb(response, raw=raw))
    assert back.output("t").as_strings() == texts
    assert back.output("t").shape == [3]


def test_bytes_packing() -> None:
    items = [b"a", b"", b"xyz"]
    packed = pack_bytes(items)
    assert packed == b"\x01\x00\x00\x00a\x00\x00\x00\x00\x03\x00\x00\x00xyz"
    assert unpack_bytes(packed, 3, "t") == items
    with pytest.raises(InvalidArgument, match="'t'.*holds 2"):
        unpack_bytes(packed, 2, "t")
    with pytest.raises(InvalidArgument, match="claims 3 bytes"):
        unpack_bytes(packed[:-1], 3, "t")


def test_float_params_as_strings_for_mlserver_nodes() -> None:
    message = convert.request_to_pb(InferRequest("m", [], {"temperature": 0.7}), floats="string")
    assert message.parameters["temperature"].WhichOneof("parameter_choice") == "string_param"
    assert get_float(convert.request_from_pb(message).parameters, "temperature", None) == 0.7


def test_invalid_utf8_names_element() -> None:
    tensor = Tensor.from_strings("text", [b"ok", b"\xff\xfe"])
    with pytest.raises(InvalidArgument, match="input 'text': element 1 is not valid UTF-8"):
        tensor.as_strings()


def test_param_readers() -> None:
    params = {"t": "true", "f": 0, "n": "3", "x": "2.5", "j": '["a"]', "bad": "maybe"}
    assert get_bool(params, "t", False) is True
    assert get_bool(params, "f", True) is False
    assert get_bool(params, "missing", True) is True
    assert get_int(params, "n", None) == 3
    assert get_float(params, "x", None) == 2.5
    assert get_json(params, "j", None) == ["a"]
    with pytest.raises(InvalidArgument, match="parameter 'bad' must be a boolean"):
        get_bool(params, "bad", False)
    with pytest.raises(InvalidArgument, match="parameter 'x' must be an integer"):
        get_int(params, "x", None)
    with pytest.raises(InvalidArgument, match="parameter 'bad' is not valid JSON"):
        get_json(params, "bad", None)
