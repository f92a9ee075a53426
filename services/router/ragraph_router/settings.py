"""Router settings: ``RAGRAPH_ROUTER_<FIELD>`` environment variables or ``ragraph serve router`` flags."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGRAPH_ROUTER_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    grpc_port: int = Field(8301, description="V2 gRPC port (0 picks a free one).")
    graph: str | None = Field(None, description="Graph YAML file; None runs the shipped default rag graph.")
    model_name: str = Field("rag", description="V2 model name the graph is served as.")
    default_timeout_ms: int = Field(120_000, gt=0, description="Deadline for requests that carry none.")
    check_interval_s: float = Field(2.0, gt=0, description="How often node readiness is re-checked.")
    prompt_encoding: str | None = Field(
        "cl100k_base", description="tiktoken encoding for prompt budgets; falls back to the encoder tokenizer offline."
    )
    max_question_bytes: int = Field(8192, description="Largest question accepted, in UTF-8 bytes.")
    max_top_k: int = Field(50, description="Largest top_k a request may ask for.")
    max_message_bytes: int = Field(64 * 1024 * 1024, description="Largest gRPC message accepted or sent.")
    log_level: str = Field("INFO", description="Python log level.")
