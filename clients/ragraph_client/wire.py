"""Moving typed requests and responses in and out of V2 protobuf messages, duck-typed: the same
code fills our generated messages and MLServer's (whose stubs cannot be imported beside ours).
:mod:`ragraph_client.convert` binds these to our stubs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .errors import InvalidArgument
from .tensors import DATATYPES, InferRequest, InferResponse, Param, Tensor, decode_wire_tensors, encode_raw

FloatForm = Literal["double", "string"]


_INT64 = (-(2**63), 2**63 - 1)


def param_to_pb(value: Param, target: Any, floats: FloatForm = "double", name: str = "") -> None:
    """Fill one InferParameter. MLServer's has no ``double_param`` or ``uint64_param``: with
    ``floats="string"`` (or a target without those fields) a float, and an integer beyond int64,
    travel as ``string_param`` (``repr``/``str``: read back exactly by ``ragraph_client.params``).
    Otherwise an integer beyond int64 goes as ``uint64_param`` when it fits one; one that fits no
    field is InvalidArgument naming the parameter, never dropped or wrapped."""
    fields = target.DESCRIPTOR.fields_by_name
    label = f"parameter '{name}'" if name else "parameter"
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            target.int64_param = value
        elif floats == "string" or "uint64_param" not in fields:
            target.string_param = str(value)
        elif 0 <= value < 2**64:
            target.uint64_param = value
        else:
            raise InvalidArgument(f"{label}: {value} fits neither int64 nor uint64")
    elif isinstance(value, float):
        if floats == "string" or "double_param" not in fields:
            target.string_param = repr(value)  # MLServer's InferParameter has no double_param
        else:
            target.double_param = value
    elif isinstance(value, str):
        target.string_param = value
    else:
        raise InvalidArgument(f"{label}: value {value!r} is not bool, int, float or str")


def params_to_pb(params: Mapping[str, Param], target: Any, floats: FloatForm = "double") -> None:
    for key, value in params.items():
        param_to_pb(value, target[key], floats, key)


def params_from_pb(params: Mapping[str, Any]) -> dict[str, Param]:
    out: dict[str, Param] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(param, choice)
    return out


def _fill_typed(tensor: Tensor, contents: Any) -> None:
    field_name = DATATYPES[tensor.datatype][1]
    if not field_name:
        raise InvalidArgument(f"tensor '{tensor.name}': {tensor.datatype} can only travel raw")
    values = tensor.data.reshape(-1)
    getattr(contents, field_name).extend(values.tolist() if tensor.datatype != "BYTES" else list(values))


def _fill_tensors(entries: Any, raw_contents: Any, tensors: list[Tensor], raw: bool, floats: FloatForm) -> None:
    for tensor in tensors:
        entry = entries.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        params_to_pb(tensor.parameters, entry.parameters, floats)
        if raw:
            raw_contents.append(encode_raw(tensor))
        else:
            _fill_typed(tensor, entry.contents)


def _read_tensors(entries: Any, raw_contents: Any, what: str) -> list[Tensor]:
    arrays = decode_wire_tensors(entries, raw_contents, what)
    return [
        Tensor(t.name, t.datatype, list(t.shape), arrays[i], params_from_pb(t.parameters))
        for i, t in enumerate(entries)
    ]


def fill_request(message: Any, request: InferRequest, raw: bool = True, floats: FloatForm = "double") -> Any:
    """Numeric and BYTES tensors travel in raw_input_contents unless ``raw`` is False."""
    message.model_name, message.model_version, message.id = request.model_name, request.model_version, request.id
    params_to_pb(request.parameters, message.parameters, floats)
    _fill_tensors(message.inputs, message.raw_input_contents, request.inputs, raw, floats)
    for name in request.outputs:
        message.outputs.add(name=name)
    return message


def read_request(message: Any) -> InferRequest:
    return InferRequest(
        model_name=message.model_name,
        inputs=_read_tensors(message.inputs, message.raw_input_contents, "input"),
        parameters=params_from_pb(message.parameters),
        id=message.id,
        model_version=message.model_version,
        outputs=[o.name for o in message.outputs],
    )


def fill_response(message: Any, response: InferResponse, raw: bool = True) -> Any:
    message.model_name, message.model_version, message.id = response.model_name, response.model_version, response.id
    params_to_pb(response.parameters, message.parameters)
    _fill_tensors(message.outputs, message.raw_output_contents, response.outputs, raw, "double")
    return message


def read_response(message: Any) -> InferResponse:
    return InferResponse(
        model_name=message.model_name,
        outputs=_read_tensors(message.outputs, message.raw_output_contents, "output"),
        parameters=params_from_pb(message.parameters),
        id=message.id,
        model_version=message.model_version,
    )
