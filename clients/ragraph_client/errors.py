"""ragraph's error types, their one mapping to gRPC status codes, and the one table from those
codes to HTTP statuses.

Every error we raise on purpose is a :class:`RagraphError` carrying its gRPC code. Servers map
exceptions to a status with :func:`status_for` (and nothing else); clients turn a failed call
back into the matching subclass with :func:`from_status`, so a caller can ``except NotFound``
whatever service answered. Every HTTP door (the router's V2 REST and OpenAI-compatible API, an
MLServer-hosted node's REST) answers the status :func:`http_status` gives for the code.
"""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger("ragraph.errors")


class RagraphError(Exception):
    """Base class: an error that knows its gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}: {self.message!r})"


class InvalidArgument(RagraphError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RagraphError):
    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(RagraphError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(RagraphError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(RagraphError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(RagraphError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(RagraphError):
    code = grpc.StatusCode.CANCELLED


class FailedPrecondition(RagraphError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class StreamError(RagraphError):
    """An error a Triton-style stream reported in band (``error_message``)."""

    code = grpc.StatusCode.UNKNOWN


_BY_CODE: dict[grpc.StatusCode, type[RagraphError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        Unauthenticated,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        FailedPrecondition,
    )
}


# gRPC code -> HTTP status, for every HTTP door; anything not here is 500. The mapping of
# google.rpc.Code (and grpc-gateway): FAILED_PRECONDITION is 400 (the request cannot be served
# as things stand, and retrying it will not help), CANCELLED is 499 (nginx's "client closed
# request").
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# HTTP status a peer answered -> gRPC code: the inverse of HTTP_STATUS (400 is INVALID_ARGUMENT),
# and 422, which MLServer answers for FAILED_PRECONDITION (its own errors, e.g. an invalid model URI)
GRPC_CODE: dict[int, grpc.StatusCode] = {
    **{status: code for code, status in HTTP_STATUS.items() if code != grpc.StatusCode.FAILED_PRECONDITION},
    422: grpc.StatusCode.FAILED_PRECONDITION,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status an HTTP door answers for a gRPC code (500 for one not in :data:`HTTP_STATUS`)."""
    return HTTP_STATUS.get(code, 500)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a server answers for ``exc``: its own code for a RagraphError, INTERNAL
    (with the traceback logged, since it is our bug) for anything else."""
    if isinstance(exc, RagraphError):
        return exc.code, exc.message
    log.error("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def from_status(code: grpc.StatusCode, details: str) -> RagraphError:
    """The typed exception for a status a peer answered with."""
    cls = _BY_CODE.get(code, RagraphError)
    return cls(details, code)


def from_rpc_error(err: grpc.RpcError) -> RagraphError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return from_status(code, details or "")
