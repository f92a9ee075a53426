"""``create_server(settings) -> (server, port)`` for the router, plus ``run`` for the CLI.

One process serves: V2 gRPC (plain or TLS/mTLS) with grpc.health.v1 kept in step with the
graph's readiness, the REST + SSE gateway, and Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server
from ragraph_client import logs
from ragraph_client.net import free_port

from .access.gate import Gate
from .edge import Edge
from .graph import load
from .rest import RestGateway
from .service import RouterService
from .servicer import RouterServicer, add_to_server
from .settings import RouterSettings
from .telemetry import RouterMetrics, Tracing

log = logging.getLogger("ragraph.router")


class RouterServer:
    """The grpc.aio server, the V2 servicer, grpc.health.v1 kept in step with readiness."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.graph = load(settings.graph)  # a bad graph fails here, before anything listens
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise ValueError("router: tls_cert and tls_key go together")
        if settings.tls_client_ca and not settings.tls_cert:
            raise ValueError("router: tls_client_ca (mTLS) needs tls_cert and tls_key")
        self.port = settings.grpc_port or free_port(settings.host)
        self.http_port = _port(settings.http_port, settings.host)
        self.metrics_port = _port(settings.metrics_port, settings.host)
        self.metrics = RouterMetrics()
        self.tracing = Tracing.from_env()
        # grpc.aio objects bind to the loop that creates them: the server, the servicer's
        # service and its node clients are built inside serve(), on the running loop.
        self.service: RouterService | None = None
        self.edge: Edge | None = None
        self.rest: RestGateway | None = None

    def _credentials(self) -> grpc.ServerCredentials | None:
        settings = self.settings
        if not settings.tls_cert or not settings.tls_key:
            return None
        pair = [(_read(settings.tls_key), _read(settings.tls_cert))]
        ca = _read(settings.tls_client_ca) if settings.tls_client_ca else None
        return grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=ca is not None)

    def _build(self) -> grpc.aio.Server:
        settings = self.settings
        self.service = RouterService(settings, self.graph, self.metrics, self.tracing)
        self.edge = Edge(self.service, Gate.from_settings(settings), self.metrics, self.tracing)
        options = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
        ]
        server = grpc.aio.server(options=options)
        add_to_server(RouterServicer(self.edge), server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{settings.host}:{self.port}"
        credentials = self._credentials()
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        if bound != self.port:
            raise OSError(f"router: could not bind {address}")
        if self.http_port > 0:
            self.rest = RestGateway(self.edge, settings, self.http_port)
        return server

    async def _health_loop(self, service: RouterService) -> None:
        status = None
        while True:
            ready = service.ready
            serving = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            if serving != status:
                status = serving
                for name in ("", self.settings.model_name):
                    await self.health.set(name, serving)
            await asyncio.sleep(0.2)

    async def serve(self) -> None:
        server = self._build()
        assert self.service is not None and self.edge is not None
        if self.metrics_port > 0:
            start_http_server(self.metrics_port, self.settings.host, registry=self.metrics.registry)
        await server.start()
        if self.rest is not None:
            await self.rest.start()
        self.service.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        health_task = loop.create_task(self._health_loop(self.service))
        log.info(
            "router serving graph %s as '%s' on %s: gRPC :%d%s, REST :%d, metrics :%d, API keys %s",
            self.graph.name,
            self.settings.model_name,
            self.settings.host,
            self.port,
            " (TLS)" if self.settings.tls_cert else "",
            self.http_port,
            self.metrics_port,
            "required" if self.edge.gate.enabled else "off",
        )
        await stop.wait()
        health_task.cancel()
        if self.rest is not None:
            await self.rest.stop()
        await server.stop(grace=5)
        await self.edge.close()
        await self.service.close()


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _port(setting: int, host: str) -> int:
    """A port setting: -1 (off) stays -1, 0 becomes a free port."""
    return -1 if setting < 0 else setting or free_port(host)


def create_server(settings: RouterSettings) -> tuple[RouterServer, int]:
    server = RouterServer(settings)
    return server, server.port


def run(server: RouterServer) -> None:
    logs.configure(server.settings.log_level, server.settings.log_format)
    asyncio.run(server.serve())
