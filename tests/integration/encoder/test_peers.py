"""Peers we did not write talk to the encoder: tritonclient (gRPC and HTTP) and MLServer's own
codecs and converters. Each runs in its own process: their `inference.*` stubs collide with ours."""

from __future__ import annotations

import numpy as np
import pytest
from ragraph_client.client import InferenceClient

from tests.fixtures.servers import Service, run_peer

TEXTS = ["Did Johannes Gutenberg invent the printing press?", "Pencils are made of graphite."]


def ours(service: Service) -> np.ndarray:
    with InferenceClient(service.grpc_url) as client:
        return client.infer("encoder", {"text": TEXTS}).output("embedding").as_numpy()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tritonclient(encoder_service: Service, protocol: str) -> None:
    url = encoder_service.grpc_url if protocol == "grpc" else encoder_service.http_url
    result = run_peer(
        f"""
        import json
        import numpy as np
        import tritonclient.{protocol} as tc

        client = tc.InferenceServerClient(url={url!r})
        live = client.is_server_live()
        meta = client.get_model_metadata("encoder")
        meta = meta if isinstance(meta, dict) else {{
            "inputs": [{{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}} for t in meta.inputs],
            "outputs": [{{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}} for t in meta.outputs],
        }}
        text = tc.InferInput("text", [2], "BYTES")
        # MLServer's REST has no binary-data extension: tritonclient.http must send JSON there.
        binary = {{"binary_data": False}} if {protocol!r} == "http" else {{}}
        text.set_data_from_numpy(np.array({TEXTS!r}, dtype=object), **binary)
        response = client.infer("encoder", [text], outputs=[tc.InferRequestedOutput("embedding", **binary)])
        emb = response.as_numpy("embedding")
        print(json.dumps({{"live": live, "meta": meta, "embedding": emb.tolist(), "dtype": str(emb.dtype)}}))
        """
    )
    assert result["live"] is True
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in result["meta"]["inputs"]] == [
        ("text", "BYTES", [-1])
    ]
    assert result["meta"]["outputs"][0]["name"] == "embedding"
    assert result["dtype"] == "float32"
    np.testing.assert_allclose(np.array(result["embedding"]), ours(encoder_service), atol=1e-5)


def test_mlserver_codecs_build_a_request_the_encoder_answers(encoder_service: Service) -> None:
    result = run_peer(
        f"""
        import json
        import grpc
        from mlserver.codecs import StringCodec, NumpyCodec
        from mlserver.types import InferenceRequest
        from mlserver.grpc.converters import ModelInferRequestConverter, ModelInferResponseConverter
        from mlserver.grpc import dataplane_pb2_grpc

        request = InferenceRequest(inputs=[StringCodec.encode_input("text", {TEXTS!r})])
        message = ModelInferRequestConverter.from_types(request, model_name="encoder", use_raw=False)
        stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel({encoder_service.grpc_url!r}))
        reply = ModelInferResponseConverter.to_types(stub.ModelInfer(message, timeout=30))
        emb = NumpyCodec.decode_output(reply.outputs[0])
        print(json.dumps({{"shape": list(request.inputs[0].shape), "embedding": emb.tolist()}}))
        """
    )
    assert result["shape"] == [2, 1]  # MLServer's StringCodec sends [N, 1]
    np.testing.assert_allclose(np.array(result["embedding"]), ours(encoder_service), atol=1e-5)
