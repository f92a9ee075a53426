"""The one converter between generated V2 messages and ragraph's typed objects.

Everything that touches ``inference_pb2`` on the client and router side goes through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ._generated import inference_pb2 as pb
from .errors import InvalidArgument
from .tensors import (
    DATATYPES,
    InferRequest,
    InferResponse,
    ModelMetadata,
    Param,
    Tensor,
    TensorSpec,
    decode_wire_tensors,
    encode_raw,
)

FloatForm = Literal["double", "string"]


def param_to_pb(value: Param, target: pb.InferParameter, floats: FloatForm = "double") -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        if floats == "string":
            target.string_param = repr(value)
        else:
            target.double_param = value
    elif isinstance(value, str):
        target.string_param = value
    else:
        raise InvalidArgument(f"parameter value {value!r} is not bool, int, float or str")


def params_to_pb(params: Mapping[str, Param], target: Any, floats: FloatForm = "double") -> None:
    for key, value in params.items():
        param_to_pb(value, target[key], floats)


def params_from_pb(params: Mapping[str, pb.InferParameter]) -> dict[str, Param]:
    out: dict[str, Param] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(param, choice)
    return out


def _fill_typed(tensor: Tensor, contents: pb.InferTensorContents) -> None:
    field_name = DATATYPES[tensor.datatype][1]
    if not field_name:
        raise InvalidArgument(f"tensor '{tensor.name}': {tensor.datatype} can only travel raw")
    values = tensor.data.reshape(-1)
    getattr(contents, field_name).extend(values.tolist() if tensor.datatype != "BYTES" else list(values))


def request_to_pb(request: InferRequest, raw: bool = True, floats: FloatForm = "double") -> pb.ModelInferRequest:
    """Numeric and BYTES tensors travel in raw_input_contents unless ``raw`` is False."""
    message = pb.ModelInferRequest(model_name=request.model_name, model_version=request.model_version, id=request.id)
    params_to_pb(request.parameters, message.parameters, floats)
    for tensor in request.inputs:
        entry = message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        params_to_pb(tensor.parameters, entry.parameters, floats)
        if raw:
            message.raw_input_contents.append(encode_raw(tensor))
        else:
            _fill_typed(tensor, entry.contents)
    for name in request.outputs:
        message.outputs.add(name=name)
    return message


def request_from_pb(message: pb.ModelInferRequest) -> InferRequest:
    arrays = decode_wire_tensors(message.inputs, message.raw_input_contents, "input")
    inputs = [
        Tensor(t.name, t.datatype, list(t.shape), arrays[i], params_from_pb(t.parameters))
        for i, t in enumerate(message.inputs)
    ]
    return InferRequest(
        model_name=message.model_name,
        inputs=inputs,
        parameters=params_from_pb(message.parameters),
        id=message.id,
        model_version=message.model_version,
        outputs=[o.name for o in message.outputs],
    )


def response_to_pb(response: InferResponse, raw: bool = True) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    params_to_pb(response.parameters, message.parameters)
    for tensor in response.outputs:
        entry = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        params_to_pb(tensor.parameters, entry.parameters)
        if raw:
            message.raw_output_contents.append(encode_raw(tensor))
        else:
            _fill_typed(tensor, entry.contents)
    return message


def response_from_pb(message: pb.ModelInferResponse) -> InferResponse:
    arrays = decode_wire_tensors(message.outputs, message.raw_output_contents, "output")
    outputs = [
        Tensor(t.name, t.datatype, list(t.shape), arrays[i], params_from_pb(t.parameters))
        for i, t in enumerate(message.outputs)
    ]
    return InferResponse(
        model_name=message.model_name,
        outputs=outputs,
        parameters=params_from_pb(message.parameters),
        id=message.id,
        model_version=message.model_version,
    )


def metadata_from_pb(message: pb.ModelMetadataResponse) -> ModelMetadata:
    def specs(items: Any) -> list[TensorSpec]:
        return [TensorSpec(t.name, t.datatype, list(t.shape)) for t in items]

    return ModelMetadata(
        name=message.name,
        versions=list(message.versions),
        platform=message.platform,
        inputs=specs(message.inputs),
        outputs=specs(message.outputs),
    )


def metadata_to_pb(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    message = pb.ModelMetadataResponse(name=metadata.name, versions=metadata.versions, platform=metadata.platform)
    for spec in metadata.inputs:
        message.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    for spec in metadata.outputs:
        message.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    return message
