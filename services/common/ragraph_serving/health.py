"""grpc.health.v1 on MLServer's gRPC server (MLServer 1.7.1 serves only the V2 ServerReady /
ModelReady calls, which Kubernetes' native gRPC probes and ``grpc_health_probe`` cannot use).

:func:`install` wraps ``mlserver.grpc.server.GRPCServer`` so that every server it builds also
serves ``grpc.health.v1.Health``, kept in step with the model registry:

- ``""`` (the whole server) is SERVING once at least one model is registered and every
  registered model is ready, NOT_SERVING otherwise (still loading, a load failed, shutting down);
- each model name is SERVING while every loaded version of it is ready, NOT_SERVING otherwise;
- a name the server has never hosted answers NOT_FOUND (the health service's own rule).

Health calls never need the service token: they are a different gRPC service from the V2 one.
On shutdown every name turns NOT_SERVING before MLServer's grace period starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger("ragraph.serving")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
POLL_INTERVAL_S = 0.5

_INSTALLED = "_ragraph_health_installed"


async def registry_status(data_plane: Any) -> dict[str, int]:
    """Health status by service name ("" and every registered model) from MLServer's registry."""
    models = list(await data_plane._model_registry.get_models())
    by_name: dict[str, bool] = {}
    for model in models:
        by_name[model.name] = by_name.get(model.name, True) and bool(model.ready)
    status = {name: SERVING if ready else NOT_SERVING for name, ready in by_name.items()}
    status[""] = SERVING if by_name and all(by_name.values()) else NOT_SERVING
    return status


class _HealthServicer(health.aio.HealthServicer):
    """grpc's reference servicer, except that the server starts NOT_SERVING (the reference one
    says SERVING for "" from the start, before any model has loaded)."""

    def __init__(self) -> None:
        super().__init__()
        self._server_status[""] = NOT_SERVING


class HealthReporter:
    """The health servicer of one MLServer gRPC server and the task that keeps it current."""

    def __init__(self, data_plane: Any, interval_s: float = POLL_INTERVAL_S) -> None:
        self.data_plane = data_plane
        self.interval_s = interval_s
        self.servicer = _HealthServicer()
        self.current: dict[str, int] = {"": NOT_SERVING}
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        try:
            status = await registry_status(self.data_plane)
        except Exception:  # noqa: BLE001 - a registry hiccup must not kill the reporter
            log.exception("health: reading the model registry failed")
            status = {name: NOT_SERVING for name in {"", *self.current}}
        # names that left the registry (unloaded) stop serving rather than vanish
        for name in self.current:
            status.setdefault(name, NOT_SERVING)
        for name, value in status.items():
            if self.current.get(name) != value:
                await self.servicer.set(name, value)
                log.info("health: %r %s", name, health_pb2.HealthCheckResponse.ServingStatus.Name(value))
        self.current = status

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ragraph-health")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.servicer.enter_graceful_shutdown()


def install() -> None:
    """Make MLServer's gRPC server serve grpc.health.v1 (idempotent)."""
    # imported here: MLServer's generated V2 stubs must not load in processes that use ours
    import mlserver.grpc.server as mlserver_grpc_server

    cls = mlserver_grpc_server.GRPCServer
    if getattr(cls, _INSTALLED, False):
        return
    create_server = cls._create_server
    stop = cls.stop

    def _create_server(self: Any) -> Any:
        server = create_server(self)
        reporter = HealthReporter(self._data_plane)
        health_pb2_grpc.add_HealthServicer_to_server(reporter.servicer, server)
        self._ragraph_health = reporter
        try:
            reporter.start()
        except RuntimeError:  # built outside a running loop: nothing to keep current
            log.warning("health: gRPC server built outside an event loop; grpc.health.v1 stays NOT_SERVING")
        return server

    async def _stop(self: Any, sig: int | None = None) -> None:
        reporter = getattr(self, "_ragraph_health", None)
        if reporter is not None:
            await reporter.shutdown()
        await stop(self, sig)

    cls._create_server = _create_server  # type: ignore[method-assign]
    cls.stop = _stop  # type: ignore[method-assign]
    setattr(cls, _INSTALLED, True)


__all__ = ["HealthReporter", "install", "registry_status"]
