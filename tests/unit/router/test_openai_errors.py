"""The OpenAI API's error object: each status of ragraph's one table gets its OpenAI error type
(docs/openai.md, "Errors"), a cancelled call included."""

from __future__ import annotations

import grpc
import pytest
from ragraph_client.errors import Cancelled, RagraphError, http_status
from ragraph_router.openai_out import error_body


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error"),
        (grpc.StatusCode.UNAUTHENTICATED, 401, "authentication_error"),
        (grpc.StatusCode.NOT_FOUND, 404, "not_found_error"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limit_error"),
        (grpc.StatusCode.CANCELLED, 499, "request_cancelled"),
        (grpc.StatusCode.UNAVAILABLE, 503, "service_unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "server_error"),
        (grpc.StatusCode.INTERNAL, 500, "server_error"),
    ],
)
def test_each_status_has_its_openai_type(code: grpc.StatusCode, status: int, kind: str) -> None:
    assert http_status(code) == status
    assert error_body(RagraphError("no", code), status)["error"]["type"] == kind


def test_a_cancelled_call() -> None:
    exc = Cancelled("node generate (llm@127.0.0.1:1): cancelled")
    assert error_body(exc, http_status(exc.code)) == {
        "error": {
            "message": "node generate (llm@127.0.0.1:1): cancelled",
            "type": "request_cancelled",
            "param": None,
            "code": "cancelled",
        }
    }
