"""Where ragraph errors meet MLServer's: a RagraphError raised inside a runtime travels through
MLServer wrapped in :class:`RuntimeRequestError` (so plain ``mlserver start`` still answers a
sensible HTTP status), and ragraph's servicer unwraps it to the original gRPC code."""

from __future__ import annotations

import grpc
from mlserver.errors import MLServerError
from ragraph_client.errors import RagraphError, status_for

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 422,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_GRPC_FROM_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    422: grpc.StatusCode.FAILED_PRECONDITION,
}


class RuntimeRequestError(MLServerError):
    def __init__(self, error: RagraphError) -> None:
        super().__init__(error.message, status_code=_HTTP_STATUS.get(error.code, 500))
        self.error = error


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping for MLServer-hosted services."""
    if isinstance(exc, RuntimeRequestError):
        return status_for(exc.error)
    if isinstance(exc, MLServerError) and exc.status_code in _GRPC_FROM_HTTP:
        return _GRPC_FROM_HTTP[exc.status_code], str(exc)
    return status_for(exc)
