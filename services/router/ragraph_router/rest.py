"""The router's REST + SSE gateway (aiohttp, on the router's event loop): V2 REST health,
metadata and infer, and Triton's generate extension (``generate``, ``generate_stream`` as
Server-Sent Events). Everything around the graph (keys, rate limits, request id, tracing,
metrics) is the :class:`Edge`'s; JSON shaping is ``rest_io``'s; gRPC codes become HTTP
statuses by ragraph's one table (``ragraph_client.errors.HTTP_STATUS``). See
docs/operations.md, "REST + SSE"."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from ragraph_client import logs
from ragraph_client.errors import InvalidArgument, RagraphError, http_status
from ragraph_client.headers import REQUEST_ID_HEADER
from ragraph_client.tensors import InferRequest, InferResponse

from . import rag_io, rest_io, sse
from .edge import Edge, retry_after
from .events import Event, SourcesEvent
from .openai_api import OpenAIApi
from .settings import RouterSettings

log = logging.getLogger("ragraph.router.rest")

TIMEOUT_HEADER = "x-request-timeout-ms"
SHUTDOWN_GRACE_S = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Builder = Callable[[dict[str, Any], list[str]], InferRequest]


@dataclass
class Door:
    """What an inference call brings besides its body: headers, deadline, the metrics method."""

    headers: dict[str, str]
    remaining: float | None
    method: str


class _Failed(Exception):
    """An error from a graph call, with the request id it ran under. Anything that is not a
    RagraphError was already logged by the edge (our bug)."""

    def __init__(self, error: Exception, request_id: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.request_id = request_id


def _headers(request: web.Request) -> dict[str, str]:
    """Request headers with lower-case names (the first of repeated ones), as the edge takes them."""
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        out.setdefault(name.lower(), value)
    return out


def _remaining(headers: dict[str, str]) -> float | None:
    """The caller's deadline (``x-request-timeout-ms``), else None: the router's default."""
    raw = headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        millis = int(raw.strip())
    except ValueError:
        millis = 0
    if millis <= 0:
        raise InvalidArgument(f"header {TIMEOUT_HEADER} must be a positive integer (milliseconds), got {raw!r}")
    return millis / 1000


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=rest_io.dumps(data), status=status, headers=headers, content_type="application/json")


def _error_parts(exc: Exception, logged: bool) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, body, headers) for an error."""
    if isinstance(exc, RagraphError):
        code, message = exc.code, exc.message
    else:
        if not logged:
            log.error("REST gateway: internal error", exc_info=exc)
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
    headers: dict[str, str] = {}
    wait = retry_after(exc)
    if wait is not None:
        headers["Retry-After"] = wait
    return http_status(code), rest_io.write_error(message, code.name), headers


class RestGateway:
    def __init__(self, edge: Edge, settings: RouterSettings, port: int) -> None:
        self.edge = edge
        self.settings = settings
        self.port = port
        # room for the largest question, JSON-escaped, plus parameters
        max_body = max(1 << 20, 6 * settings.max_question_bytes + (64 << 10))
        self.app = web.Application(middlewares=[self._errors], client_max_size=max_body)
        routes = [
            web.get("/v2/health/live", self.live),
            web.get("/v2/health/ready", self.ready),
            web.get("/v2", self.server_metadata),
        ]
        for model in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes += [
                web.get(model, self.model_metadata),
                web.get(f"{model}/ready", self.model_ready),
                web.post(f"{model}/infer", self.infer),
                web.post(f"{model}/generate", self.generate),
                web.post(f"{model}/generate_stream", self.generate_stream),
            ]
        routes += OpenAIApi(edge).routes()  # /v1/...: the OpenAI-compatible API (docs/openai.md)
        self.app.add_routes(routes)
        self._runner: web.AppRunner | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | None:
        settings = self.settings
        if not settings.tls_cert or not settings.tls_key:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.tls_client_ca:
            context.load_verify_locations(cafile=settings.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def start(self) -> None:
        # handler_cancellation: a client that goes away cancels its handler, and with it the
        # graph call (and the LLM's generation) it was waiting on
        runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.port, ssl_context=self._ssl())
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.debug("REST gateway on %s:%d", self.settings.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # --- errors --------------------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Failed as failed:
            status, body, headers = _error_parts(failed.error, logged=True)
            if failed.request_id:
                headers[REQUEST_ID_HEADER] = failed.request_id
            return _json(body, status, headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 404:
                message = f"no such endpoint: {request.method} {request.path}"
            elif exc.status == 405:
                message = f"method {request.method} is not allowed on {request.path}"
            else:
                message = exc.text or exc.reason
            headers = {REQUEST_ID_HEADER: self.edge.identify("", _headers(request))[0]}
            if "Allow" in exc.headers:
                headers["Allow"] = exc.headers["Allow"]
            return _json({"error": message}, exc.status, headers)
        except Exception as exc:  # noqa: BLE001 - RagraphError keeps its code; anything else is a 500
            status, body, headers = _error_parts(exc, logged=False)
            headers[REQUEST_ID_HEADER] = self.edge.identify("", _headers(request))[0]
            return _json(body, status, headers)

    # --- health and metadata (health needs no key, as over gRPC) ------------------------------------

    async def live(self, request: web.Request) -> web.Response:
        return _json({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        ready = bool(self.edge.service.ready)
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return _json(rag_io.server_metadata())

    async def model_ready(self, request: web.Request) -> web.Response:
        self.edge.check_model(request.match_info["model"], request.match_info.get("version", ""))
        ready = bool(self.edge.service.ready)
        return _json({"name": self.edge.model, "ready": ready}, 200 if ready else 503)

    async def model_metadata(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], request.match_info.get("version", "")
        metadata = self.edge.metadata_for(_headers(request), model, version)
        return _json(rest_io.write_metadata(metadata))

    # --- inference -------------------------------------------------------------------------------------

    async def _read(self, request: web.Request, method: str, build: Builder) -> tuple[InferRequest, Door]:
        """The request to run, once the key, the model name and version, the headers and the JSON
        body are checked (the key first: a caller without one learns nothing about its body).
        A refusal here is counted and logged under the request's id like one from the graph,
        and the error response carries that id."""
        started = time.perf_counter()
        headers = _headers(request)
        request_id, _ = self.edge.identify("", headers)  # a bad header id is refused later, after the key
        logs.request_id.set(request_id)
        model, version = request.match_info["model"], request.match_info.get("version", "")
        try:
            remaining = _remaining(headers)
            if "inference-header-content-length" in headers:
                raise InvalidArgument(
                    "the binary tensor data extension is not supported: send tensors as JSON "
                    "(tritonclient.http: binary_data=False, binary_data_output=False)"
                )
            metadata = self.edge.metadata_for(headers, model, version)
            outputs = [spec.name for spec in metadata.outputs]
            infer_request = build(rest_io.load_body(await request.read()), outputs)
        except Exception as exc:  # noqa: BLE001 - mapped by _errors
            self.edge.refused(method, exc, started)
            raise _Failed(exc, request_id) from exc
        infer_request.model_version = version
        infer_request.id = infer_request.id or request_id
        return infer_request, Door(headers, remaining, method)

    async def _infer(self, infer_request: InferRequest, door: Door) -> InferResponse:
        try:
            return await self.edge.infer(infer_request, door.headers, door.remaining, door.method)
        except Exception as exc:  # noqa: BLE001 - mapped by _errors
            raise _Failed(exc, infer_request.id) from exc

    def _infer_body(self, body: dict[str, Any], names: list[str]) -> InferRequest:
        return rest_io.read_infer(body, self.edge.model, names)

    async def infer(self, request: web.Request) -> web.Response:
        infer_request, door = await self._read(request, "RestInfer", self._infer_body)
        response = await self._infer(infer_request, door)
        return _json(rest_io.write_infer(response, infer_request.outputs), headers={REQUEST_ID_HEADER: response.id})

    def _generate_body(self, body: dict[str, Any], names: list[str]) -> InferRequest:
        return rest_io.read_generate(body, self.edge.model)

    async def generate(self, request: web.Request) -> web.Response:
        infer_request, door = await self._read(request, "RestGenerate", self._generate_body)
        response = await self._infer(infer_request, door)
        return _json(rest_io.write_generate(response), headers={REQUEST_ID_HEADER: response.id})

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        """SSE: one ``data:`` event per streamed message (sources, each text delta, the final
        one with the parameters). The status line waits for the first message after the sources
        (the first text, or the final one): a request refused or invalid anywhere before the
        answer starts (key, rate limit, a parameter the LLM refuses) gets a plain JSON error with
        its own status. An error after that is an ``event: error`` frame, and the stream ends."""
        infer_request, door = await self._read(request, "RestGenerateStream", self._generate_body)
        events = self.edge.stream(infer_request, door.headers, door.remaining, door.method)

        def refuse(exc: Exception) -> web.StreamResponse:
            raise _Failed(exc, infer_request.id) from exc  # mapped by _errors

        return await sse.respond(
            request,
            events,
            infer_request.id,
            is_sources=lambda item: isinstance(item[0], SourcesEvent),
            refuse=refuse,
            pump=_pump,
            log=log,
            name="REST",
        )


async def _pump(
    response: web.StreamResponse,
    head: list[tuple[Event, InferResponse | None]],
    events: AsyncIterator[tuple[Event, InferResponse | None]],
) -> None:
    """Each message as a ``data:`` event, then the end of the stream."""
    if await sse.relay(response, head, events, _frames, _error_frame):
        await response.write_eof()


def _frames(item: tuple[Event, InferResponse | None]) -> list[bytes]:
    """A message's event; none for an event whose output the request did not ask for."""
    _, message = item
    return [] if message is None else [sse.frame(rest_io.write_generate(message))]


def _error_frame(exc: Exception) -> bytes:
    _, body, _ = _error_parts(exc, logged=True)
    return sse.frame(body, event="error")
