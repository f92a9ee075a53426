"""The encoder service over the wire, with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ragraph_client.client import AsyncInferenceClient, InferenceClient
from ragraph_client.tensors import TensorSpec

DATA = Path(__file__).resolve().parents[2] / "data"


def embed(client: InferenceClient, texts: list[str], **params: object) -> np.ndarray:
    return client.infer("encoder", {"text": texts}, params).output("embedding").as_numpy()


def test_real_semantics(encoder_client: InferenceClient) -> None:
    question = "Did Johannes Gutenberg invent the printing press?"
    related = "Gutenberg introduced movable-type printing to Europe."
    unrelated = "Pencils are made of graphite."
    q, a, b = embed(encoder_client, [question, related, unrelated])
    assert float(q @ a) > float(q @ b) + 0.2


def test_embeddings_are_unit_unless_asked_otherwise(encoder_client: InferenceClient) -> None:
    unit = embed(encoder_client, ["a short sentence", "another one"])
    assert unit.shape == (2, 384) and unit.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    raw = embed(encoder_client, ["a short sentence", "another one"], normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-5)


def test_batching_does_not_change_results(encoder_client: InferenceClient) -> None:
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(10)]
    together = embed(encoder_client, texts)
    alone = np.stack([embed(encoder_client, [t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_typed_contents_are_read_and_answered(encoder_service: object) -> None:
    with InferenceClient(encoder_service.grpc_url, raw=False) as client:  # type: ignore[attr-defined]
        typed = client.infer("encoder", {"text": ["plain contents"]}).output("embedding").as_numpy()
    with InferenceClient(encoder_service.grpc_url) as client:  # type: ignore[attr-defined]
        raw = client.infer("encoder", {"text": ["plain contents"]}).output("embedding").as_numpy()
    np.testing.assert_allclose(typed, raw, atol=1e-6)


def test_metadata_declares_every_tensor(encoder_client: InferenceClient) -> None:
    enc = encoder_client.metadata("encoder")
    assert enc.inputs == [TensorSpec("text", "BYTES", [-1])]
    assert enc.outputs == [TensorSpec("embedding", "FP32", [-1, 384])]
    cls = encoder_client.metadata("classifier")
    assert cls.outputs == [TensorSpec("label", "BYTES", [-1]), TensorSpec("score", "FP32", [-1])]
    assert encoder_client.live() and encoder_client.ready()
    assert encoder_client.model_ready("encoder") and encoder_client.model_ready("classifier")


def test_rest_endpoint_answers_the_same(encoder_service: object, encoder_client: InferenceClient) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello over REST"]}]}
    req = urllib.request.Request(
        f"http://{encoder_service.http_url}/v2/models/encoder/infer",  # type: ignore[attr-defined]
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = json.load(resp)["outputs"][0]
    assert out["name"] == "embedding" and out["shape"] == [1, 384]
    np.testing.assert_allclose(np.array(out["data"]), embed(encoder_client, ["hello over REST"])[0], atol=1e-5)


async def test_async_client(encoder_service: object) -> None:
    async with AsyncInferenceClient(encoder_service.grpc_url, timeout=30) as client:  # type: ignore[attr-defined]
        assert await client.live()
        meta = await client.metadata("encoder")
        response = await client.infer("classifier", {"text": ["What is the capital of France?"]})
    assert meta.name == "encoder"
    assert response.output("label").as_strings() == ["benign"]


def _heldout(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / f"{name}_heldout.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("labelset", ["query_guard", "answer_class"])
def test_classifier_accuracy_on_heldout(encoder_client: InferenceClient, labelset: str) -> None:
    rows = _heldout(labelset)
    response = encoder_client.infer("classifier", {"text": [r["text"] for r in rows]}, {"labelset": labelset})
    predicted = response.output("label").as_strings()
    scores = response.output("score").as_numpy()
    assert response.parameters["labelset"] == labelset
    assert np.all((scores > 0) & (scores <= 1))
    correct = Counter(r["label"] for r, p in zip(rows, predicted, strict=True) if r["label"] == p)
    accuracy = sum(correct.values()) / len(rows)
    print(f"\n{labelset}: accuracy {accuracy:.3f} on {len(rows)} held-out texts; correct per label {dict(correct)}")
    assert accuracy >= 0.85
