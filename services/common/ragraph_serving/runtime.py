"""Base class of ragraph's MLServer runtimes.

A runtime implements :meth:`RagraphRuntime.infer` on typed objects; this class converts MLServer's
types at the edge and hands ragraph errors to MLServer in a form that keeps their gRPC code.
"""

from __future__ import annotations

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor
from ragraph_client.errors import RagraphError
from ragraph_client.tensors import InferRequest, InferResponse, TensorSpec

from .codec import request_from_mlserver, response_to_mlserver
from .errors import RuntimeRequestError
from .servicer import install

install()


class RagraphRuntime(MLModel):
    """Extension point: subclass, load the model in ``load``, answer in ``infer``."""

    async def infer(self, request: InferRequest) -> InferResponse:
        raise NotImplementedError

    async def handle(self, request: InferRequest) -> InferResponse:
        """``infer`` with the response stamped with this model's name and version."""
        request.model_name = self.name
        response = await self.infer(request)
        response.model_name = self.name
        response.model_version = self.version or ""
        return response

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            response = await self.handle(request_from_mlserver(payload, self.name))
        except RagraphError as exc:
            raise RuntimeRequestError(exc) from exc
        return response_to_mlserver(response)

    def declare(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        """Publish the model's tensors in ModelMetadata (every ragraph model declares them)."""
        self._settings.inputs = [MetadataTensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in inputs]
        self._settings.outputs = [MetadataTensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in outputs]
