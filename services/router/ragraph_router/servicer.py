"""The router's V2 gRPC servicer: protobuf in, typed objects to the :class:`Edge` (keys, limits,
tracing, metrics, the graph), protobuf out. Errors map to gRPC codes in one place
(``ragraph_client.errors.status_for``); codes from the nodes pass through unflattened; a
rate-limit refusal carries ``retry-after`` (seconds) in its trailing metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ragraph_client import convert
from ragraph_client._generated import inference_pb2 as pb
from ragraph_client._generated import inference_pb2_grpc as pb_grpc
from ragraph_client.errors import NotFound, status_for

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
