"""Router settings: ``RAGRAPH_ROUTER_<FIELD>`` environment variables or ``ragraph serve router`` flags."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGRAPH_ROUTER_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the gRPC, REST and metrics servers bind to.")
    grpc_port: int = Field(8301, description="V2 gRPC port (0 picks a free one).")
    http_port: int = Field(8300, description="V2 REST + SSE gateway port (0 picks a free one, -1 turns REST off).")
    metrics_port: int = Field(8302, description="Prometheus /metrics port (0 picks a free one, -1 turns it off).")
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
    max_inflight: int = Field(
        80,
        ge=0,
        description="Most requests whose graph runs at once (0: no cap); past it a request is refused with "
        "RESOURCE_EXHAUSTED (HTTP 429) before any node is called. The default is one LLM's capacity at its "
        "defaults (max_batch_size 16 + max_queued 64): beyond it the LLM refuses anyway, after the guard, the "
        "encoder and the store have done their work.",
    )
    log_level: str = Field("INFO", description="Python log level.")
    node_lb_policy: Literal["round_robin", "pick_first"] = Field(
        "round_robin",
        description="gRPC load balancing over the addresses a node URL resolves to: round_robin spreads "
        "requests over every replica behind a headless Service; pick_first keeps one connection.",
    )
    log_format: Literal["json", "text"] = Field("json", description="json: one JSON object per line, with request_id.")

    # --- edge security (docs/security.md) ------------------------------------------------------
    api_keys_file: str | None = Field(
        None,
        description="Key file written by `ragraph keys` (hashed keys, per-key limits). When this or "
        "api_keys is set, every inference call needs a key; health endpoints stay open.",
    )
    api_keys: str | None = Field(
        None, description="Comma-separated key hashes ('sha256:<hex>', as `ragraph keys create` prints); no file."
    )
    rate_limit_rps: float | None = Field(None, gt=0, description="Default requests/s per key (a key's own wins).")
    rate_limit_burst: int | None = Field(None, gt=0, description="Default request burst per key (default: 2 x rps).")
    rate_limit_tokens_per_min: int | None = Field(
        None, gt=0, description="Default generated tokens per minute per key (a key's own wins)."
    )
    redis_url: str | None = Field(
        None, description="redis://host:port/db: rate-limit buckets shared by every router replica."
    )
    node_token: str | None = Field(
        None, description="Shared service token sent to the nodes (they check it when they set service_token)."
    )
    tls_cert: str | None = Field(None, description="PEM certificate chain: serve gRPC and REST over TLS.")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert.")
    tls_client_ca: str | None = Field(None, description="PEM CA bundle: require client certificates it signed (mTLS).")
