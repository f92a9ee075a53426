"""Starting an MLServer instance that hosts ragraph runtimes, with ragraph's servicers: the
factory :func:`create_mlserver` sets the node's access rules and applies :mod:`.mlserver_patch`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from mlserver import MLServer
from mlserver.settings import ModelSettings, Settings
from ragraph_client import logs
from ragraph_client.net import free_port
from ragraph_client.otel import otlp_endpoint, tracing_requested

from . import access, mlserver_patch
from .cpu import fit_threads_to_quota
from .settings import ServingSettings


@dataclass
class HostedServer:
    """An MLServer ready to start; ``grpc_port``/``http_port``/``metrics_port`` are resolved."""

    settings: Settings
    models: list[ModelSettings]
    grpc_port: int
    http_port: int
    metrics_port: int
    mlserver: MLServer | None = None

    async def serve(self) -> list[str]:
        """Serve until stopped; the names of the models that never became ready (empty after a
        plain SIGINT/SIGTERM). MLServer's ``start`` logs a start-up load failure, stops its servers
        and returns as it does after a signal: only the models' readiness tells the two apart."""
        # Built inside the running loop: MLServer attaches its SIGINT/SIGTERM handlers to the
        # current loop in __init__; built earlier, they land on a throwaway loop and SIGTERM is lost.
        self.mlserver = MLServer(self.settings)
        await self.mlserver.start(self.models)
        ready = {m.name for m in await mlserver_patch.hosted_models(self.mlserver) if m.ready}
        return [m.name for m in self.models if m.name not in ready]

    async def stop(self) -> None:
        if self.mlserver is not None:
            await self.mlserver.stop()


def create_mlserver(settings: ServingSettings, models: list[ModelSettings], server_name: str) -> HostedServer:
    """An MLServer for ``models`` with ragraph's servicers (:func:`.mlserver_patch.apply`, which
    refuses an MLServer outside the pinned range), the service token and the repository switch."""
    prefix = str(settings.model_config.get("env_prefix") or "RAGRAPH_")
    mlserver_patch.apply()
    access.set_token(settings.service_token)
    access.set_repository_api(settings.model_repository_api, f"{prefix}MODEL_REPOSITORY_API")
    fit_threads_to_quota()
    grpc_port = settings.grpc_port or free_port(settings.host)
    http_port = settings.http_port or free_port(settings.host)
    metrics_port = settings.metrics_port or free_port(settings.host)
    mlserver_settings = Settings(
        server_name=server_name,
        host=settings.host,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        parallel_workers=0,  # models share the process (and the encoder weights); work runs in threads
        load_models_at_startup=False,
        grpc_max_message_length=settings.max_message_bytes,
        debug=False,
        # MLServer exports OTLP spans (continuing the router's traceparent) when tracing is asked for
        tracing_server=_otlp_target() if tracing_requested() else None,
    )
    if settings.max_connection_age_s > 0:
        options = {
            "grpc.max_connection_age_ms": int(settings.max_connection_age_s * 1000),
            "grpc.max_connection_age_grace_ms": 300_000,  # long enough for a stream under way to finish
        }
        mlserver_patch.set_grpc_server_options(mlserver_settings, options)
    return HostedServer(mlserver_settings, models, grpc_port, http_port, metrics_port)


def _otlp_target() -> str | None:
    """MLServer's exporter wants host:port (it always connects in plaintext)."""
    endpoint = otlp_endpoint()
    if endpoint is None:
        return None
    return endpoint.split("://", 1)[-1].rstrip("/")


def run(server: HostedServer, log_level: str = "INFO", log_format: str = "json") -> None:
    """Serve until SIGINT/SIGTERM (MLServer installs the signal handlers). ragraph's own log
    lines go out as JSON (with the request id) or text; MLServer keeps its own format."""
    logs.configure(log_level, log_format, loggers=("ragraph",))
    logger = logging.getLogger("ragraph")
    logger.info(
        "serving V2 gRPC on :%d, REST on :%d, metrics on :%d", server.grpc_port, server.http_port, server.metrics_port
    )
    try:
        failed = asyncio.run(server.serve())
    except KeyboardInterrupt:
        return
    if failed:
        logger.error("stopped: model(s) %s failed to load (the error is logged above)", ", ".join(failed))
        raise SystemExit(1)


__all__ = ["HostedServer", "create_mlserver", "run"]
