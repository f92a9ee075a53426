"""Sync and asyncio clients for any V2 (Open Inference Protocol) gRPC server.

>>> with InferenceClient("localhost:8001") as client:
...     response = client.infer("encoder", {"text": ["hello", "world"]})
...     response.output("embedding").as_numpy().shape
(2, 384)

Numeric and BYTES tensors travel raw (binary, little-endian) by default; responses are read
whether the server answered raw or typed. Failed calls raise the :mod:`ragraph_client.errors`
subclass of the status code (``NotFound``, ``InvalidArgument``, ...).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import grpc
import grpc.aio
import numpy as np

from . import convert
from ._generated import inference_pb2 as pb
from ._generated import inference_pb2_grpc as pb_grpc
from .errors import InvalidArgument, StreamError, from_rpc_error
from .tensors import InferRequest, InferResponse, ModelMetadata, Param, Tensor

StreamStyle = Literal["triton", "mlserver"]
InputsLike = Mapping[str, Any] | Sequence[Tensor]
Headers = Mapping[str, str] | None

STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


def make_tensor(name: str, value: Any) -> Tensor:
    """``str``/``bytes`` -> BYTES [1]; a list of them -> BYTES [N]; anything else via numpy."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (str, bytes)):
        return Tensor.from_strings(name, [value])
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, bytes)) for v in value):
        return Tensor.from_strings(name, value)
    return Tensor.from_numpy(name, np.asarray(value))


def make_request(
    model: str,
    inputs: InputsLike,
    parameters: Mapping[str, Param] | None = None,
    outputs: Sequence[str] | None = None,
    id: str = "",
    version: str = "",
) -> InferRequest:
    if isinstance(inputs, Mapping):
        tensors = [make_tensor(name, value) for name, value in inputs.items()]
    else:
        tensors = list(inputs)
    return InferRequest(model, tensors, dict(parameters or {}), id, version, list(outputs or []))


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as handle:
        return handle.read()


def _credentials(tls: bool, ca: str | None, cert: str | None, key: str | None) -> grpc.ChannelCredentials | None:
    if not tls:
        return None
    if bool(cert) != bool(key):
        raise InvalidArgument("a client certificate needs both cert and key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
    )


def _metadata(headers: Headers) -> list[tuple[str, str]] | None:
    return [(k.lower(), v) for k, v in headers.items()] if headers else None


def _stream_response(message: Any, style: StreamStyle) -> InferResponse:
    if style == "triton":
        if message.error_message:
            raise StreamError(message.error_message)
        return convert.response_from_pb(message.infer_response)
    return convert.response_from_pb(message)


class _ClientBase:
    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = None,
        headers: Headers = None,
        raw: bool = True,
        float_params: convert.FloatForm = "double",
        channel_options: Sequence[tuple[str, Any]] = (),
        tls: bool = False,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """``tls``: connect over TLS, verifying the server against ``ca`` (a PEM file; default:
        the system roots); ``cert``/``key``: a client certificate for mTLS (implies ``tls``).
        ``api_key`` goes out as ``authorization: Bearer <key>`` on every call."""
        self.url = url
        self.credentials = _credentials(tls or bool(ca or cert), ca, cert, key)
        # extra gRPC channel arguments, e.g. faster reconnects for a router's node clients
        self.channel_options = [*CHANNEL_OPTIONS, *channel_options]
        self.timeout = timeout
        self.headers = dict(headers or {})
        if api_key:
            self.headers.setdefault("authorization", f"Bearer {api_key}")
        self.raw = raw
        self.float_params: convert.FloatForm = float_params

    def _call_kwargs(self, timeout: float | None, headers: Headers) -> dict[str, Any]:
        merged = {**self.headers, **(headers or {})}
        return {"timeout": timeout if timeout is not None else self.timeout, "metadata": _metadata(merged)}

    def _to_pb(self, request: InferRequest) -> pb.ModelInferRequest:
        return convert.request_to_pb(request, raw=self.raw, floats=self.float_params)

    def _stream_deserializer(self, style: StreamStyle) -> Any:
        if style == "triton":
            return pb.ModelStreamInferResponse.FromString
        if style == "mlserver":
            return pb.ModelInferResponse.FromString
        raise InvalidArgument(f"stream style must be 'triton' or 'mlserver', not {style!r}")


class InferenceClient(_ClientBase):
    """Blocking client. ``url`` is ``host:port``."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        if self.credentials is None:
            self._channel = grpc.insecure_channel(url, options=self.channel_options)
        else:
            self._channel = grpc.secure_channel(url, self.credentials, options=self.channel_options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: str, message: Any, timeout: float | None, headers: Headers) -> Any:
        try:
            return getattr(self._stub, method)(message, **self._call_kwargs(timeout, headers))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def live(self, timeout: float | None = None, headers: Headers = None) -> bool:
        return bool(self._unary("ServerLive", pb.ServerLiveRequest(), timeout, headers).live)

    def ready(self, timeout: float | None = None, headers: Headers = None) -> bool:
        return bool(self._unary("ServerReady", pb.ServerReadyRequest(), timeout, headers).ready)

    def model_ready(self, name: str, version: str = "", timeout: float | None = None, headers: Headers = None) -> bool:
        message = pb.ModelReadyRequest(name=name, version=version)
        return bool(self._unary("ModelReady", message, timeout, headers).ready)

    def server_metadata(self, timeout: float | None = None, headers: Headers = None) -> dict[str, Any]:
        reply = self._unary("ServerMetadata", pb.ServerMetadataRequest(), timeout, headers)
        return {"name": reply.name, "version": reply.version, "extensions": list(reply.extensions)}

    def metadata(
        self, name: str, version: str = "", timeout: float | None = None, headers: Headers = None
    ) -> ModelMetadata:
        reply = self._unary("ModelMetadata", pb.ModelMetadataRequest(name=name, version=version), timeout, headers)
        return convert.metadata_from_pb(reply)

    def infer(
        self,
        model: str,
        inputs: InputsLike,
        parameters: Mapping[str, Param] | None = None,
        *,
        outputs: Sequence[str] | None = None,
        id: str = "",
        timeout: float | None = None,
        headers: Headers = None,
    ) -> InferResponse:
        request = make_request(model, inputs, parameters, outputs, id)
        return self.infer_request(request, timeout=timeout, headers=headers)

    def infer_request(
        self, request: InferRequest, timeout: float | None = None, headers: Headers = None
    ) -> InferResponse:
        return convert.response_from_pb(self._unary("ModelInfer", self._to_pb(request), timeout, headers))

    def stream(
        self,
        model: str,
        inputs: InputsLike,
        parameters: Mapping[str, Param] | None = None,
        *,
        style: StreamStyle = "triton",
        timeout: float | None = None,
        headers: Headers = None,
    ) -> Iterator[InferResponse]:
        """One request on ModelStreamInfer; yields each response until the server ends it."""
        return self.stream_requests(
            [make_request(model, inputs, parameters)], style=style, timeout=timeout, headers=headers
        )

    def stream_requests(
        self,
        requests: Iterable[InferRequest],
        *,
        style: StreamStyle = "triton",
        timeout: float | None = None,
        headers: Headers = None,
    ) -> Iterator[InferResponse]:
        method = self._channel.stream_stream(
            STREAM_METHOD,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=self._stream_deserializer(style),
        )
        call = method((self._to_pb(r) for r in requests), **self._call_kwargs(timeout, headers))
        try:
            for message in call:
                yield _stream_response(message, style)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()


class AsyncInferenceClient(_ClientBase):
    """asyncio client with the same calls as :class:`InferenceClient`, awaited."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        if self.credentials is None:
            self._channel = grpc.aio.insecure_channel(url, options=self.channel_options)
        else:
            self._channel = grpc.aio.secure_channel(url, self.credentials, options=self.channel_options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncInferenceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(self, method: str, message: Any, timeout: float | None, headers: Headers) -> Any:
        try:
            return await getattr(self._stub, method)(message, **self._call_kwargs(timeout, headers))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def live(self, timeout: float | None = None, headers: Headers = None) -> bool:
        return bool((await self._unary("ServerLive", pb.ServerLiveRequest(), timeout, headers)).live)

    async def ready(self, timeout: float | None = None, headers: Headers = None) -> bool:
        return bool((await self._unary("ServerReady", pb.ServerReadyRequest(), timeout, headers)).ready)

    async def model_ready(
        self, name: str, version: str = "", timeout: float | None = None, headers: Headers = None
    ) -> bool:
        message = pb.ModelReadyRequest(name=name, version=version)
        return bool((await self._unary("ModelReady", message, timeout, headers)).ready)

    async def server_metadata(self, timeout: float | None = None, headers: Headers = None) -> dict[str, Any]:
        reply = await self._unary("ServerMetadata", pb.ServerMetadataRequest(), timeout, headers)
        return {"name": reply.name, "version": reply.version, "extensions": list(reply.extensions)}

    async def metadata(
        self, name: str, version: str = "", timeout: float | None = None, headers: Headers = None
    ) -> ModelMetadata:
        message = pb.ModelMetadataRequest(name=name, version=version)
        return convert.metadata_from_pb(await self._unary("ModelMetadata", message, timeout, headers))

    async def infer(
        self,
        model: str,
        inputs: InputsLike,
        parameters: Mapping[str, Param] | None = None,
        *,
        outputs: Sequence[str] | None = None,
        id: str = "",
        timeout: float | None = None,
        headers: Headers = None,
    ) -> InferResponse:
        request = make_request(model, inputs, parameters, outputs, id)
        return await self.infer_request(request, timeout=timeout, headers=headers)

    async def infer_request(
        self, request: InferRequest, timeout: float | None = None, headers: Headers = None
    ) -> InferResponse:
        reply = await self._unary("ModelInfer", self._to_pb(request), timeout, headers)
        return convert.response_from_pb(reply)

    async def stream(
        self,
        model: str,
        inputs: InputsLike,
        parameters: Mapping[str, Param] | None = None,
        *,
        style: StreamStyle = "triton",
        timeout: float | None = None,
        headers: Headers = None,
    ) -> AsyncGenerator[InferResponse, None]:
        request = make_request(model, inputs, parameters)
        async for response in self.stream_requests([request], style=style, timeout=timeout, headers=headers):
            yield response

    async def stream_requests(
        self,
        requests: Iterable[InferRequest],
        *,
        style: StreamStyle = "triton",
        timeout: float | None = None,
        headers: Headers = None,
    ) -> AsyncGenerator[InferResponse, None]:
        method = self._channel.stream_stream(
            STREAM_METHOD,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=self._stream_deserializer(style),
        )
        call = method((self._to_pb(r) for r in requests), **self._call_kwargs(timeout, headers))
        try:
            async for message in call:
                yield _stream_response(message, style)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()
