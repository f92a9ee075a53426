"""Where ragraph errors meet MLServer's: a RagraphError raised inside a runtime travels through
MLServer wrapped in :class:`RuntimeRequestError` (so plain ``mlserver start`` still answers a
sensible HTTP status, from ragraph's one table), and ragraph's servicer unwraps it to the
original gRPC code. MLServer's own errors carry only an HTTP status, read back to a gRPC code
with the reverse table."""

from __future__ import annotations

import grpc
from mlserver.errors import MLServerError
from ragraph_client.errors import GRPC_CODE, RagraphError, http_status, status_for


class RuntimeRequestError(MLServerError):
    def __init__(self, error: RagraphError) -> None:
        super().__init__(error.message, status_code=http_status(error.code))
        self.error = error


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping for MLServer-hosted services."""
    if isinstance(exc, RuntimeRequestError):
        return status_for(exc.error)
    if isinstance(exc, MLServerError) and exc.status_code in GRPC_CODE:
        return GRPC_CODE[exc.status_code], str(exc)
    return status_for(exc)
