"""ragraph's own gRPC metadata between the router and its nodes (no generated stubs here: the
MLServer-hosted nodes import this too)."""

from __future__ import annotations

SERVICE_TOKEN_HEADER = "x-ragraph-service-token"


def service_token_headers(token: str | None) -> dict[str, str] | None:
    """Metadata carrying the node service token; None when no token is configured."""
    return {SERVICE_TOKEN_HEADER: token} if token else None
