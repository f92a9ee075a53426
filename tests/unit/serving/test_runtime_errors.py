"""A RagraphError through MLServer: wrapped with the HTTP status of ragraph's one table, unwrapped
to its own gRPC code; MLServer's own errors read back by their HTTP status."""

from __future__ import annotations

import subprocess
import sys

# in a process of its own: MLServer's V2 stubs and ours cannot share an interpreter
CHECK = """
import grpc
from mlserver.errors import InferenceError, InvalidModelURI, MLServerError, ModelNotFound
from ragraph_client.errors import FailedPrecondition, InvalidArgument, NotFound, RagraphError, ResourceExhausted
from ragraph_serving.errors import RuntimeRequestError, grpc_status

for error, status in [
    (InvalidArgument("bad"), 400),
    (FailedPrecondition("not now"), 400),
    (NotFound("gone"), 404),
    (ResourceExhausted("full"), 429),
    (RagraphError("ours"), 500),
]:
    wrapped = RuntimeRequestError(error)
    assert wrapped.status_code == status, (error, wrapped.status_code)
    assert grpc_status(wrapped) == (error.code, error.message), error

for error, code in [
    (InferenceError("bad input"), grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFound("m"), grpc.StatusCode.NOT_FOUND),
    (InvalidModelURI("m", "s3://x"), grpc.StatusCode.FAILED_PRECONDITION),
]:
    assert grpc_status(error) == (code, str(error)), (error, grpc_status(error))

code, message = grpc_status(MLServerError("boom", status_code=500))
assert code == grpc.StatusCode.INTERNAL and "boom" in message, (code, message)
assert grpc_status(ValueError("x"))[0] == grpc.StatusCode.INTERNAL
print("ok")
"""


def test_errors_through_mlserver() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ok"
