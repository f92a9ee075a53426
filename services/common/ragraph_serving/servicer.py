"""ragraph's V2 servicer for MLServer: MLServer's own, plus request validation before MLServer's
converters run (so a bad datatype or a shape/data mismatch is INVALID_ARGUMENT naming the input,
not INTERNAL), one error mapping that keeps every gRPC code a runtime chose, the service token
and the model repository switch (:mod:`.access`), and streams a client may cancel at any point
without an error being logged. :func:`.mlserver_patch.apply` has MLServer's gRPC server build
these in place of its own."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import grpc
from mlserver.errors import ModelNotFound
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import ModelInferResponseConverter
from mlserver.grpc.model_repository import ModelRepositoryServicer
from mlserver.grpc.servicers import InferenceServicer
from ragraph_client import logs
from ragraph_client.errors import InvalidArgument, NotFound
from ragraph_client.headers import REQUEST_ID_HEADER, SERVICE_TOKEN_HEADER
from ragraph_client.tensors import decode_wire_tensors
from ragraph_client.wire import fill_response, read_request

from . import access, mlserver_patch
from .errors import grpc_status

if TYPE_CHECKING:
    from .runtime import RagraphRuntime

log = logging.getLogger("ragraph.serving")


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, model: str = "", version: str = "") -> None:
    if _gone(context):
        # The client cancelled (or its deadline passed): whatever the unwinding raised is not an
        # error of ours, and the call has no one left to answer.
        log.debug("call ended by the client: %s: %s", type(exc).__name__, exc)
        return
    if isinstance(exc, ModelNotFound):
        which = f"model '{model}' version '{version}'" if version else f"model '{model}'"
        exc = NotFound(f"{which} not found on this server")
    code, message = grpc_status(exc)
    await context.abort(code, message)


def _gone(context: Any) -> bool:
    """Whether the client has cancelled the call or its deadline has passed."""
    cancelled = getattr(context, "cancelled", None)
    return bool(cancelled()) if callable(cancelled) else False


def validate_request(request: Any) -> None:
    """Decode every tensor (naming the bad one) before MLServer's converters see it."""
    decode_wire_tensors(request.inputs, request.raw_input_contents, "input")


def _metadata_value(context: Any, name: str) -> Any:
    """The value of the call's first ``name`` metadata entry, else None."""
    return next((v for k, v in (context.invocation_metadata() or ()) if k == name), None)


def _bind_request_id(request: Any, context: Any) -> None:
    """Log lines of this call carry the caller's request id: the V2 ``id``, else ``x-request-id``."""
    logs.request_id.set(request.id or _metadata_value(context, REQUEST_ID_HEADER) or None)


async def _require_token(context: Any) -> None:
    """UNAUTHENTICATED unless the call carries the service token (when one is configured; see
    :mod:`.access`). Called outside the handlers' try blocks: context.abort raises."""
    if not access.allowed(_metadata_value(context, SERVICE_TOKEN_HEADER)):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, access.DENIED)


async def _require_repository_api(context: Any) -> None:
    """PERMISSION_DENIED unless the model repository's load/unload calls are turned on."""
    if not access.repository_api_enabled():
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, access.repository_api_off_message())


class _TokenGuardedRepository:
    """MLServer's model repository extension (index, load, unload) behind the service token;
    load and unload answer PERMISSION_DENIED unless the repository API is turned on."""

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        await _require_token(context)
        return await super().RepositoryIndex(request, context)  # type: ignore[misc]

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await _require_token(context)
        await _require_repository_api(context)
        return await super().RepositoryModelLoad(request, context)  # type: ignore[misc]

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await _require_token(context)
        await _require_repository_api(context)
        return await super().RepositoryModelUnload(request, context)  # type: ignore[misc]


class GuardedRepositoryServicer(_TokenGuardedRepository, ModelRepositoryServicer):
    """MLServer's (deprecated) ModelRepositoryService, behind the service token."""


class RagraphInferenceServicer(_TokenGuardedRepository, InferenceServicer):
    """With a service token set, every method but ServerLive, ServerReady, ModelReady and
    ServerMetadata needs it (:mod:`.access`)."""

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        await _require_token(context)
        return await super().ModelMetadata(request, context)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            return await super().ModelReady(request, context)
        except Exception as exc:  # unknown model: NOT_FOUND rather than UNKNOWN
            await _abort(context, exc, request.name, request.version)
            raise

    async def _is_ragraph_runtime(self, request: Any) -> bool:
        """Whether the request's model is a ragraph runtime (unknown model: ModelNotFound). Those
        go wire -> typed -> wire, decoding (and validating) the tensors once and skipping
        MLServer's pydantic round trip (measured in docs/benchmarks.md); MLServer's request
        metrics still apply."""
        if not request.model_name:
            raise InvalidArgument("model_name is empty")
        target = await mlserver_patch.hosted_model(self._data_plane, request.model_name, request.model_version or None)
        return hasattr(target, "handle")

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        await _require_token(context)
        _bind_request_id(request, context)
        log.debug("ModelInfer %s", request.model_name)
        try:
            use_raw = bool(request.raw_input_contents)
            if await self._is_ragraph_runtime(request):
                typed = read_request(request)
                async with mlserver_patch.infer_context(
                    self._data_plane, request.model_name, request.model_version or None
                ) as model:
                    response = await cast("RagraphRuntime", model).handle(typed)
                response.id = request.id
                return fill_response(pb.ModelInferResponse(), response, raw=use_raw)
            validate_request(request)
            payload = self._InsertHeaders(request, context)
            result = await self._data_plane.infer(
                payload=payload, name=request.model_name, version=request.model_version
            )
            self._SetTrailingMetadata(result, context)
            return ModelInferResponseConverter.from_types(result, use_raw=use_raw)
        except Exception as exc:
            await _abort(context, exc, request.model_name, request.model_version)
            raise

    async def ModelStreamInfer(
        self, requests_stream: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelInferResponse]:
        """MLServer's stream form (responses are ModelInferResponse; errors end the stream)."""
        await _require_token(context)
        first = None
        try:
            async for request in requests_stream:
                first = request
                break
            if first is None:
                return
            _bind_request_id(first, context)
            log.debug("ModelStreamInfer %s", first.model_name)
            use_raw = bool(first.raw_input_contents)
            if await self._is_ragraph_runtime(first):
                # Closing this generator (client gone, deadline) closes the runtime's stream,
                # which frees its work.
                typed = read_request(first)
                async with mlserver_patch.stream_context(
                    self._data_plane, first.model_name, first.model_version or None
                ) as model:
                    async for response in cast("RagraphRuntime", model).handle_stream(typed):
                        response.id = first.id
                        yield fill_response(pb.ModelInferResponse(), response, raw=use_raw)
                return
            validate_request(first)
            payloads = self._PayloadsMetadataGenerator(first, requests_stream, context)
            async for result in self._data_plane.infer_stream(
                payloads=payloads, name=first.model_name, version=first.model_version
            ):
                yield ModelInferResponseConverter.from_types(result, use_raw=use_raw)
        except Exception as exc:
            await _abort(context, exc, first.model_name if first is not None else "")
            if not _gone(context):
                raise
