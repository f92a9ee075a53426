"""grpc.health.v1 on MLServer's gRPC server (MLServer 1.7.1 serves only the V2 ServerReady /
ModelReady calls, which Kubernetes' native gRPC probes and ``grpc_health_probe`` cannot use).

:func:`ragraph_serving.mlserver_patch.apply` makes every gRPC server MLServer builds add a
:class:`HealthReporter`'s ``grpc.health.v1.Health`` servicer, kept in step with the model registry:

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

from . import mlserver_patch

log = logging.getLogger("ragraph.serving")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
POLL_INTERVAL_S = 0.5


async def registry_status(data_plane: Any) -> dict[str, int]:
    """Health status by service name ("" and every registered model) from MLServer's registry."""
    models = await mlserver_patch.hosted_models(data_plane)
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

    def add_to_server(self, server: Any) -> None:
        """Serve grpc.health.v1 on ``server`` (a grpc.aio server not yet started)."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

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


__all__ = ["HealthReporter", "registry_status"]
