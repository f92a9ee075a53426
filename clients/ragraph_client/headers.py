"""ragraph's own headers, as gRPC metadata between the router and its nodes and as HTTP headers
at the router's REST door (no generated stubs here: the MLServer-hosted nodes import this too)."""

from __future__ import annotations

SERVICE_TOKEN_HEADER = "x-ragraph-service-token"
# the request id: sent by a caller (or made by the router), returned on REST responses, and sent
# to every node, so one id can be followed through the logs (see ``logs``)
REQUEST_ID_HEADER = "x-request-id"


def service_token_headers(token: str | None) -> dict[str, str] | None:
    """Metadata carrying the node service token; None when no token is configured."""
    return {SERVICE_TOKEN_HEADER: token} if token else None
