"""Base class of ragraph's MLServer runtimes.

A runtime implements :meth:`RagraphRuntime.infer` (and, if it streams, :meth:`RagraphRuntime.stream`)
on typed objects; this class converts MLServer's types at the edge and hands ragraph errors to
MLServer in a form that keeps their gRPC code. Importing it changes nothing in MLServer: ragraph's
server factory applies :mod:`.mlserver_patch`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor
from ragraph_client.errors import RagraphError
from ragraph_client.tensors import InferRequest, InferResponse, TensorSpec

from .codec import request_from_mlserver, response_to_mlserver
from .errors import RuntimeRequestError


class RagraphRuntime(MLModel):
    """Extension point: subclass, load the model in ``load``, answer in ``infer``; override
    ``stream`` to answer ModelStreamInfer with several responses (default: the one of ``infer``)."""

    async def infer(self, request: InferRequest) -> InferResponse:
        raise NotImplementedError

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        yield await self.infer(request)

    def _stamp(self, response: InferResponse) -> InferResponse:
        response.model_name = self.name
        response.model_version = self.version or ""
        return response

    async def handle_stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        request.model_name = self.name
        async for response in self.stream(request):
            yield self._stamp(response)

    async def handle(self, request: InferRequest) -> InferResponse:
        """``infer`` with the response stamped with this model's name and version."""
        request.model_name = self.name
        return self._stamp(await self.infer(request))

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            response = await self.handle(request_from_mlserver(payload, self.name))
        except RagraphError as exc:
            raise RuntimeRequestError(exc) from exc
        return response_to_mlserver(response)

    async def predict_stream(  # type: ignore[override]
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        """MLServer's streaming entry (REST generate_stream, plain ``mlserver start``): the first
        request of the stream is answered."""
        async for payload in payloads:
            try:
                async for response in self.handle_stream(request_from_mlserver(payload, self.name)):
                    yield response_to_mlserver(response)
            except RagraphError as exc:
                raise RuntimeRequestError(exc) from exc
            return

    def declare(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        """Publish the model's tensors in ModelMetadata (every ragraph model declares them)."""
        self.inputs = [MetadataTensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in inputs]
        self.outputs = [MetadataTensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in outputs]
