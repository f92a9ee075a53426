"""``create_server(settings) -> (server, port)`` for the LLM service."""

from __future__ import annotations

from mlserver.settings import ModelParameters, ModelSettings
from ragraph_serving.server import HostedServer, create_mlserver

from .runtime import LLMRuntime
from .settings import LLMSettings


def model_settings(settings: LLMSettings) -> list[ModelSettings]:
    extra = settings.model_dump(mode="json")
    return [ModelSettings(name="llm", implementation=LLMRuntime, parameters=ModelParameters(extra=extra))]


def create_server(settings: LLMSettings) -> tuple[HostedServer, int]:
    server = create_mlserver(settings, model_settings(settings), "ragraph-llm")
    return server, server.grpc_port
