"""The node service token (``ServingSettings.service_token``), on every port MLServer opens.

When a token is set, every call needs it in ``x-ragraph-service-token`` (gRPC metadata or HTTP
header) except the health calls an orchestrator makes without credentials: server live and
ready, model ready, server metadata and grpc.health.v1. That covers inference, model metadata,
and MLServer's model repository extension (load and unload), over gRPC (both services MLServer
registers for it) and over REST.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ragraph_client.headers import SERVICE_TOKEN_HEADER

DENIED = "missing or wrong service token"

_token: str | None = None
_OPEN_REST = re.compile(r"^/v2(/health/(live|ready)|/models/[^/]+(/versions/[^/]+)?/ready)?/?$")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def set_token(token: str | None) -> None:
    global _token
    _token = token or None


def allowed(sent: object) -> bool:
    """Whether a call that sent ``sent`` (None when it sent nothing) may go ahead."""
    expected = _token
    if not expected:
        return True
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), expected.encode())


def rest_path_open(path: str) -> bool:
    """REST paths that stay open: /v2 (server metadata), /v2/health/live|ready, model ready."""
    return bool(_OPEN_REST.match(path))


class RestTokenMiddleware:
    """ASGI middleware for MLServer's REST app: 401 on a protected path without the token."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _token and not rest_path_open(scope.get("path", "")):
            headers = dict(scope.get("headers") or [])
            sent = headers.get(SERVICE_TOKEN_HEADER.encode())
            if not allowed(sent.decode("latin-1") if sent is not None else None):
                body = json.dumps({"error": DENIED}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def install_rest() -> None:
    """Make MLServer's REST server wrap its app in :class:`RestTokenMiddleware` (idempotent)."""
    import mlserver.rest.server as rest_server  # MLServer's stubs must not load where ours do

    if getattr(rest_server, "_ragraph_token", False):
        return
    create_app = rest_server.create_app

    def create_guarded_app(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_middleware(RestTokenMiddleware)
        return app

    rest_server.create_app = create_guarded_app
    rest_server._ragraph_token = True  # type: ignore[attr-defined]
