"""``create_server(settings) -> (server, port)`` for the router, plus ``run`` for the CLI."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from ragraph_client._generated import inference_pb2_grpc as pb_grpc

from .graph import load
from .service import RouterService
from .servicer import RouterServicer
from .settings import RouterSettings

log = logging.getLogger("ragraph.router")


class RouterServer:
    """The grpc.aio server, the V2 servicer, grpc.health.v1 kept in step with readiness."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.graph = load(settings.graph)  # a bad graph fails here, before anything listens
        self.port = settings.grpc_port or _free_port(settings.host)
        # grpc.aio objects bind to the loop that creates them: the server, the servicer's
        # service and its node clients are built inside serve(), on the running loop.
        self.service: RouterService | None = None

    def _build(self) -> grpc.aio.Server:
        settings = self.settings
        self.service = RouterService(settings, self.graph)
        options = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
        ]
        server = grpc.aio.server(options=options)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(RouterServicer(self.service), server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        bound = server.add_insecure_port(f"{settings.host}:{self.port}")
        if bound != self.port:
            raise OSError(f"router: could not bind {settings.host}:{self.port}")
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
        assert self.service is not None
        await server.start()
        self.service.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        health_task = loop.create_task(self._health_loop(self.service))
        log.info("router serving graph %s as '%s' on %s:%d", self.graph.name, self.settings.model_name,
                 self.settings.host, self.port)  # fmt: skip
        await stop.wait()
        health_task.cancel()
        await server.stop(grace=5)
        await self.service.close()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def create_server(settings: RouterSettings) -> tuple[RouterServer, int]:
    server = RouterServer(settings)
    return server, server.port


def run(server: RouterServer) -> None:
    logging.basicConfig(level=server.settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(server.serve())
