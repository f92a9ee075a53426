"""Serving the way an orchestrator that launches MLServer images expects.

Seldon Core 2 runs a Server's ``mlserver`` container with the ``MLSERVER_*`` variables of its
``mlserver`` ServerConfig (ports 9000/9500, ``MLSERVER_MODELS_DIR=/mnt/agent/models``,
``MLSERVER_LOAD_MODELS_AT_STARTUP=false``, ``MLSERVER_PARALLEL_WORKERS``) and no command of its
own: MLServer's image starts ``mlserver start $MLSERVER_MODELS_DIR``. Seldon's agent then writes
``<models dir>/<model>_<version>/1/model-settings.json`` (the model renamed ``<model>_<version>``)
and loads it through MLServer's model repository API.

When ``MLSERVER_MODELS_DIR`` is set, ``ragraph serve encoder|llm`` does the same with ragraph's
servicers (service token, repository switch, grpc.health.v1): settings from ``settings.json`` in
that folder and the ``MLSERVER_*`` environment (MLServer's own reader), the folder as the model
repository, and models loaded at start only when ``MLSERVER_LOAD_MODELS_AT_STARTUP`` says so.
Two things differ from ``mlserver start``: parallel workers are always 0 (MLServer's parallel
model drops ``predict_stream``, so the llm would lose token streaming, and the encoder's two
models share one copy of the weights in-process), and a repository that can only be filled
through load calls refuses to start while those calls are turned off.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from mlserver.cli.serve import load_settings
from ragraph_client import logs

from . import mlserver_patch
from .server import HostedServer, create_mlserver
from .settings import ServingSettings

log = logging.getLogger("ragraph.serving")

MODELS_DIR = "MLSERVER_MODELS_DIR"


class LaunchError(ValueError):
    """An MLSERVER_* environment ragraph cannot serve under; the message says what to change."""


def requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the process was launched the way MLServer's image is (``MLSERVER_MODELS_DIR`` set)."""
    return bool((os.environ if environ is None else environ).get(MODELS_DIR, "").strip())


def create_from_environment(settings: ServingSettings, server_name: str) -> HostedServer:
    """An MLServer over ``$MLSERVER_MODELS_DIR`` with the ``MLSERVER_*`` settings, ragraph's servicers."""
    logs.configure(settings.log_level, settings.log_format, loggers=("ragraph",))
    folder = os.environ[MODELS_DIR].strip()
    if not os.path.isdir(folder):
        raise LaunchError(f"{MODELS_DIR}={folder!r} is not a directory")
    mlserver_settings, models = asyncio.run(load_settings(folder))
    prefix = str(settings.model_config.get("env_prefix") or "RAGRAPH_")
    if not mlserver_settings.load_models_at_startup and not settings.model_repository_api:
        raise LaunchError(
            f"MLSERVER_LOAD_MODELS_AT_STARTUP is false, so models arrive only through the model repository "
            f"API, which is off: set {prefix}MODEL_REPOSITORY_API=true (Seldon Core 2's agent loads models "
            f"that way)"
        )
    if mlserver_settings.parallel_workers:
        log.warning(
            "MLSERVER_PARALLEL_WORKERS=%d ignored: ragraph's runtimes run in the server process "
            "(parallel workers drop token streaming)",
            mlserver_settings.parallel_workers,
        )
    server = create_mlserver(settings, [], server_name)
    merged = server.settings.model_copy(
        update={
            "host": mlserver_settings.host,
            "http_port": mlserver_settings.http_port,
            "grpc_port": mlserver_settings.grpc_port,
            "metrics_port": mlserver_settings.metrics_port,
            "model_repository_root": folder,
            "load_models_at_startup": mlserver_settings.load_models_at_startup,
            "grpc_max_message_length": mlserver_settings.grpc_max_message_length or settings.max_message_bytes,
            "parallel_workers": 0,
            "debug": mlserver_settings.debug,
        }
    )
    mlserver_patch.set_grpc_server_options(merged, mlserver_patch.grpc_server_options(server.settings))
    names = ", ".join(m.name for m in models) or "none yet (the model repository API loads them)"
    log.info("serving the model repository %s (MLSERVER_* settings); models at start: %s", folder, names)
    return HostedServer(merged, models, merged.grpc_port, merged.http_port, merged.metrics_port)


__all__ = ["MODELS_DIR", "LaunchError", "create_from_environment", "requested"]
