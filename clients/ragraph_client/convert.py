"""The one converter between generated V2 messages and ragraph's typed objects.

Everything that touches ``inference_pb2`` on the client and router side goes through here.
"""

from __future__ import annotations

from typing import Any

from . import wire
from ._generated import inference_pb2 as pb
from .tensors import InferRequest, InferResponse, ModelMetadata, TensorSpec
from .wire import FloatForm

__all__ = ["FloatForm", "request_to_pb", "request_from_pb", "response_to_pb", "response_from_pb"]


def request_to_pb(request: InferRequest, raw: bool = True, floats: FloatForm = "double") -> pb.ModelInferRequest:
    return wire.fill_request(pb.ModelInferRequest(), request, raw, floats)


def request_from_pb(message: pb.ModelInferRequest) -> InferRequest:
    return wire.read_request(message)


def response_to_pb(response: InferResponse, raw: bool = True) -> pb.ModelInferResponse:
    return wire.fill_response(pb.ModelInferResponse(), response, raw)


def response_from_pb(message: pb.ModelInferResponse) -> InferResponse:
    return wire.read_response(message)


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
