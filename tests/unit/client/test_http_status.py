"""ragraph's one gRPC -> HTTP status table and its reverse, and the one REQUEST_ID_HEADER."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from ragraph_client import headers, logs
from ragraph_client.errors import GRPC_CODE, HTTP_STATUS, http_status

EXPECTED = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def test_the_table() -> None:
    assert HTTP_STATUS == EXPECTED


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED])
def test_a_code_not_in_the_table_is_500(code: grpc.StatusCode) -> None:
    assert http_status(code) == 500


def test_the_reverse_table_reads_back_every_status_to_its_code() -> None:
    for code, status in HTTP_STATUS.items():
        if code != grpc.StatusCode.FAILED_PRECONDITION:  # shares 400 with INVALID_ARGUMENT
            assert GRPC_CODE[status] == code
    assert GRPC_CODE[400] == grpc.StatusCode.INVALID_ARGUMENT
    assert GRPC_CODE[422] == grpc.StatusCode.FAILED_PRECONDITION  # MLServer's status for it
    assert 500 not in GRPC_CODE


def test_one_request_id_header() -> None:
    assert headers.REQUEST_ID_HEADER == "x-request-id"
    assert not hasattr(logs, "REQUEST_ID_HEADER")  # defined once, in headers, and imported from there


def test_the_client_errors_do_not_import_mlserver() -> None:
    code = "import sys, ragraph_client.errors, ragraph_client.headers, ragraph_client.logs\n"
    code += "print('mlserver' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
