"""The router's V2 gRPC servicer: protobuf in, typed objects to the :class:`Edge` (keys, limits,
tracing, metrics, the graph), protobuf out. Errors map to gRPC codes in one place
(``ragraph_client.errors.status_for``); codes from the nodes pass through unflattened; a
rate-limit refusal carries ``retry-after`` (seconds) in its trailing metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from ragraph_client import convert
from ragraph_client._generated import inference_pb2 as pb
from ragraph_client._generated import inference_pb2_grpc as pb_grpc
from ragraph_client.errors import InvalidArgument, NotFound, status_for

from . import rag_io
from .edge import Edge, retry_after


def _remaining(context: Any) -> float | None:
    left = context.time_remaining()
    return None if left is None else max(0.0, float(left))


def _headers(context: Any) -> dict[str, str]:
    return {key.lower(): value for key, value in context.invocation_metadata() or () if isinstance(value, str)}


async def _fail(context: Any, exc: BaseException) -> None:
    code, message = status_for(exc)
    wait = retry_after(exc)
    trailers = (("retry-after", wait),) if wait is not None else ()
    await context.abort(code, message, trailing_metadata=trailers)


class RouterServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.service = edge.service
        self.model = edge.model

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        try:
            self.edge.check_model(request.name, request.version)
        except NotFound as exc:
            await _fail(context, exc)
        return pb.ModelReadyResponse(ready=self.service.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:  # noqa: N802
        return pb.ServerMetadataResponse(**rag_io.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:  # noqa: N802
        try:
            return convert.metadata_to_pb(self.edge.metadata_for(_headers(context), request.name, request.version))
        except Exception as exc:  # noqa: BLE001 - mapped in one place
            await _fail(context, exc)
        raise AssertionError("unreachable")

    async def ModelInfer(self, message: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        try:
            request = convert.request_from_pb(message)
            response = await self.edge.infer(request, _headers(context), _remaining(context), "ModelInfer")
            return convert.response_to_pb(response)
        except Exception as exc:  # noqa: BLE001 - RagraphError keeps its code; anything else is INTERNAL
            await _fail(context, exc)
        raise AssertionError("unreachable")

    async def ModelStreamInfer(  # noqa: N802
        self, messages: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's form: per request, the sources, then one message per text delta, then a final
        message flagged ``triton_final_response``. A failure mid-stream ends the call with the
        node's status code, after the deltas already sent."""
        headers = _headers(context)
        try:
            async for message in messages:
                request = convert.request_from_pb(message)
                async for _, response in self.edge.stream(request, headers, _remaining(context), "ModelStreamInfer"):
                    if response is not None:
                        yield pb.ModelStreamInferResponse(infer_response=convert.response_to_pb(response))
        except Exception as exc:  # noqa: BLE001
            await _fail(context, exc)


# --- registration -------------------------------------------------------------------------------
# The generated add_..._to_server parses each message with FromString; bytes that are not a valid
# message (a string field holding invalid UTF-8, a truncated field) then end the call UNKNOWN
# with "Unexpected DecodeError". Here such a message becomes INVALID_ARGUMENT naming its type.

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]


class _Malformed:
    def __init__(self, type_name: str, error: DecodeError) -> None:
        self.error = InvalidArgument(
            f"the request is not a valid {type_name} message ({error}): string fields must be UTF-8"
        )


def _parser(message_class: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return _Malformed(message_class.DESCRIPTOR.full_name, exc)

    return parse


def _unary(behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    async def handle(request: Any, context: Any) -> Any:
        if isinstance(request, _Malformed):
            await _fail(context, request.error)
        return await behavior(request, context)

    return handle


def _streaming(behavior: Callable[[Any, Any], AsyncIterator[Any]]) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def handle(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _Malformed):
                    raise request.error  # the servicer maps it, as any error of the call
                yield request

        async for response in behavior(checked(), context):
            yield response

    return handle


def add_to_server(servicer: RouterServicer, server: Any) -> None:
    """Register ``servicer`` as ``inference.GRPCInferenceService`` on ``server`` (what the
    generated ``add_GRPCInferenceServiceServicer_to_server`` does, with lenient parsing)."""
    handlers = {}
    for method in SERVICE.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        behavior = getattr(servicer, method.name)
        kwargs = {
            "request_deserializer": _parser(request_class),
            "response_serializer": response_class.SerializeToString,
        }
        if method.client_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(_streaming(behavior), **kwargs)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(_unary(behavior), **kwargs)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
