"""The checked-in stubs are exactly what `make protos` generates from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
GENERATED = REPO / "clients" / "ragraph_client" / "_generated"


def test_stubs_match_protos(tmp_path: Path) -> None:
    pkg = "ragraph_client/_generated"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{pkg}={REPO / 'protos'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"{pkg}/inference.proto",
        ],
        check=True,
    )
    for name in ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py"):
        fresh = (tmp_path / pkg / name).read_text()
        assert fresh == (GENERATED / name).read_text(), f"{name} drifted from protos/: run `make protos`"


def test_field_numbers_match_the_protocol() -> None:
    from ragraph_client._generated import inference_pb2 as pb

    def numbers(message: type) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert numbers(pb.ModelInferRequest) == {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "inputs": 5,
        "outputs": 6,
        "raw_input_contents": 7,
    }
    assert numbers(pb.ModelInferResponse) == {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "outputs": 5,
        "raw_output_contents": 6,
    }
    assert numbers(pb.ModelStreamInferResponse) == {"error_message": 1, "infer_response": 2}
    assert numbers(pb.InferParameter) == {
        "bool_param": 1,
        "int64_param": 2,
        "string_param": 3,
        "double_param": 4,
        "uint64_param": 5,
    }
    assert numbers(pb.InferTensorContents) == {
        "bool_contents": 1,
        "int_contents": 2,
        "int64_contents": 3,
        "uint_contents": 4,
        "uint64_contents": 5,
        "fp32_contents": 6,
        "fp64_contents": 7,
        "bytes_contents": 8,
    }
    assert numbers(pb.ModelMetadataResponse.TensorMetadata) == {"name": 1, "datatype": 2, "shape": 3, "parameters": 4}
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert pb.DESCRIPTOR.package == "inference"
    assert {m.name for m in service.methods} == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStreamInfer",
    }
