"""Settings shared by every MLServer-hosted ragraph service. Each service subclasses
:class:`ServingSettings` with its own env prefix (``RAGRAPH_ENCODER_``, ``RAGRAPH_LLM_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    host: str = Field("127.0.0.1", description="Address the gRPC, HTTP and metrics servers bind to.")
    grpc_port: int = Field(0, description="V2 gRPC port; 0 picks a free one.")
    http_port: int = Field(0, description="V2 REST port; 0 picks a free one.")
    metrics_port: int = Field(0, description="Prometheus /metrics port; 0 picks a free one.")
    max_message_bytes: int = Field(64 * 1024 * 1024, description="Largest gRPC message accepted or sent, in bytes.")
    log_level: str = Field("INFO", description="Python log level of the service.")
    log_format: Literal["json", "text"] = Field(
        "json", description="ragraph's log lines: json (one object per line, with request_id) or text."
    )
    max_connection_age_s: float = Field(
        0.0,
        ge=0,
        description="When > 0, gRPC connections are closed (gracefully) after this age, so clients "
        "re-resolve DNS and spread over replicas added since; 0 keeps connections forever.",
    )
    service_token: str | None = Field(
        None,
        description="When set, every gRPC and REST call needs this token in 'x-ragraph-service-token' (the "
        "router sends its node_token), model repository load/unload included; health calls (live, ready, "
        "model ready, server metadata, grpc.health.v1) stay open.",
    )
    model_repository_api: bool = Field(
        False,
        description="Allow MLServer's model repository calls that load and unload models (gRPC "
        "RepositoryModelLoad/Unload, REST /v2/repository/models/NAME/load|unload; the service token still "
        "applies). Off: they answer PERMISSION_DENIED / 403 and the node serves the models it started with.",
    )
