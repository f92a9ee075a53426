"""Who may call a node, on every port MLServer opens.

The service token (``ServingSettings.service_token``): when one is set, every call needs it in
``x-ragraph-service-token`` (gRPC metadata or HTTP header) except the health calls an
orchestrator makes without credentials: server live and ready, model ready, server metadata and
grpc.health.v1. That covers inference, model metadata, and MLServer's model repository extension,
over gRPC (both services MLServer registers for it) and over REST.

The model repository API (``ServingSettings.model_repository_api``): MLServer's load and unload
calls are refused (PERMISSION_DENIED over gRPC, 403 over REST) unless it is turned on, with the
token or without: a node serves the models it started with. Seldon Core 2, whose agent loads
models through these calls, runs the image's ``ragraph serve encoder|llm`` with
``MLSERVER_MODELS_DIR`` set, so its Servers set ``RAGRAPH_ENCODER_MODEL_REPOSITORY_API`` or
``RAGRAPH_LLM_MODEL_REPOSITORY_API``.

Both checks exist only where :func:`.mlserver_patch.apply` put ragraph's servicers and
:class:`RestTokenMiddleware` in MLServer's servers, i.e. under ``ragraph serve``. Plain
``mlserver start`` serves MLServer's own servers: no token, no repository switch.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ragraph_client.headers import SERVICE_TOKEN_HEADER

DENIED = "missing or wrong service token"

_TRUE = {"1", "true", "yes", "on"}


def _repository_api_from_environment() -> bool:
    return any(
        os.environ.get(f"RAGRAPH_{service}_MODEL_REPOSITORY_API", "").strip().lower() in _TRUE
        for service in ("ENCODER", "LLM")
    )


_token: str | None = None
_repository_api = _repository_api_from_environment()
_repository_setting = "the service's MODEL_REPOSITORY_API setting"
_OPEN_REST = re.compile(r"^/v2(/health/(live|ready)|/models/[^/]+(/versions/[^/]+)?/ready)?/?$")
_REPOSITORY_CHANGE = re.compile(r"^/v2/repository/models/[^/]+/(load|unload)/?$")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def set_token(token: str | None) -> None:
    global _token
    _token = token or None


def set_repository_api(enabled: bool, setting: str | None = None) -> None:
    """Turn MLServer's model load/unload calls on or off; ``setting`` names the environment
    variable that turns them on, for the refusal's message."""
    global _repository_api, _repository_setting
    _repository_api = enabled
    if setting:
        _repository_setting = setting


def repository_api_enabled() -> bool:
    return _repository_api


def repository_api_off_message() -> str:
    return f"model load/unload is turned off on this server (set {_repository_setting}=true to allow it)"


def allowed(sent: object) -> bool:
    """Whether a call that sent ``sent`` (None when it sent nothing) may go ahead."""
    expected = _token
    if not expected:
        return True
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), expected.encode())


def rest_path_open(path: str) -> bool:
    """REST paths that stay open: /v2 (server metadata), /v2/health/live|ready, model ready."""
    return bool(_OPEN_REST.match(path))


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RestTokenMiddleware:
    """ASGI middleware for MLServer's REST app: 401 on a protected path without the token, 403 on
    model load/unload while the repository API is off."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            if _token and not rest_path_open(path):
                headers = dict(scope.get("headers") or [])
                sent = headers.get(SERVICE_TOKEN_HEADER.encode())
                if not allowed(sent.decode("latin-1") if sent is not None else None):
                    await _refuse(send, 401, DENIED)
                    return
            if not _repository_api and _REPOSITORY_CHANGE.match(path):
                await _refuse(send, 403, repository_api_off_message())
                return
        await self.app(scope, receive, send)
