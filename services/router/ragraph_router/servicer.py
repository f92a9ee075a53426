"""The router's V2 servicer: protobuf in, typed objects to :class:`RouterService`, protobuf out.
Errors map to gRPC codes in one place (``ragraph_client.errors.status_for``); codes from the
nodes pass through unflattened."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ragraph_client import convert
from ragraph_client._generated import inference_pb2 as pb
from ragraph_client._generated import inference_pb2_grpc as pb_grpc
from ragraph_client.errors import NotFound, RagraphError, status_for
from ragraph_client.tensors import InferRequest, ModelMetadata

from . import rag_io
from .executor import FinalEvent
from .service import RouterService

log = logging.getLogger("ragraph.router")


def _remaining(context: Any) -> float | None:
    left = context.time_remaining()
    return None if left is None else max(0.0, float(left))


class RouterServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: RouterService) -> None:
        self.service = service
        self.model = service.settings.model_name

    def _request(self, message: pb.ModelInferRequest) -> InferRequest:
        request = convert.request_from_pb(message)
        if request.model_name != self.model:
            raise NotFound(f"unknown model '{request.model_name}': this router serves '{self.model}'")
        if not request.id:
            request.id = uuid.uuid4().hex
        return request

    async def _fail(self, context: Any, exc: BaseException) -> None:
        code, message = status_for(exc)
        await context.abort(code, message)

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        if request.name != self.model:
            await self._fail(context, NotFound(f"unknown model '{request.name}': this router serves '{self.model}'"))
        return pb.ModelReadyResponse(ready=self.service.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:  # noqa: N802
        return pb.ServerMetadataResponse(name="ragraph-router", version="0.1.0", extensions=["streaming"])

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:  # noqa: N802
        if request.name != self.model:
            await self._fail(context, NotFound(f"unknown model '{request.name}': this router serves '{self.model}'"))
        meta = ModelMetadata(self.model, ["1"], "ragraph-graph", rag_io.INPUTS, rag_io.OUTPUTS)
        return convert.metadata_to_pb(meta)

    async def ModelInfer(self, message: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        try:
            request = self._request(message)
            rag = rag_io.read_request(request, self.service.settings)
            final = await self.service.infer(rag, _remaining(context))
            return convert.response_to_pb(rag_io.final_response(final, self.model, request.id))
        except RagraphError as exc:
            await self._fail(context, exc)
        except Exception as exc:  # noqa: BLE001 - our bug: INTERNAL with a traceback
            await self._fail(context, exc)
        raise AssertionError("unreachable")

    async def ModelStreamInfer(  # noqa: N802
        self, messages: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's form: per request, the sources, then one message per text delta, then a final
        message flagged ``triton_final_response``. A failure mid-stream ends the call with the
        node's status code, after the deltas already sent."""
        try:
            async for message in messages:
                request = self._request(message)
                rag = rag_io.read_request(request, self.service.settings)
                started = time.perf_counter()
                async for event in self.service.stream(rag, _remaining(context)):
                    response = rag_io.event_response(event, self.model, request.id)
                    yield pb.ModelStreamInferResponse(infer_response=convert.response_to_pb(response))
                    if isinstance(event, FinalEvent):
                        log.debug("request %s streamed in %.1f ms", request.id, (time.perf_counter() - started) * 1e3)
        except RagraphError as exc:
            await self._fail(context, exc)
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)
