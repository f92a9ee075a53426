"""``create_server(settings) -> (server, port)`` for the encoder service."""

from __future__ import annotations

from mlserver.settings import ModelParameters, ModelSettings
from ragraph_serving.server import HostedServer, create_mlserver

from .runtime import ClassifierRuntime, EncoderRuntime
from .settings import EncoderSettings


def model_settings(settings: EncoderSettings) -> list[ModelSettings]:
    extra = settings.model_dump(mode="json")
    return [
        ModelSettings(name="encoder", implementation=EncoderRuntime, parameters=ModelParameters(extra=extra)),
        ModelSettings(name="classifier", implementation=ClassifierRuntime, parameters=ModelParameters(extra=extra)),
    ]


def create_server(settings: EncoderSettings) -> tuple[HostedServer, int]:
    server = create_mlserver(settings, model_settings(settings), "ragraph-encoder")
    return server, server.grpc_port
