"""The real encoder under a large bulk request: small interactive requests are served between its
pieces (not after it), a full bulk queue answers RESOURCE_EXHAUSTED at once while interactive
requests still pass, and a bad ``priority`` is INVALID_ARGUMENT naming it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from ragraph_client.client import AsyncInferenceClient, InferenceClient
from ragraph_client.errors import InvalidArgument, ResourceExhausted

from tests.fixtures.servers import Service, start_service

QUEUE = 48
# ~4 KB: truncated to the model's 256 tokens, so each text is a full-length row of a batch
LONG = ("ingest runs flat out while questions keep coming " * 90)[:4000]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    log = tmp_path_factory.mktemp("encoder-scheduling") / "encoder.log"
    env = {"RAGRAPH_ENCODER_MAX_QUEUED_TEXTS": str(QUEUE)}
    service = start_service(["encoder"], log, ["encoder", "classifier"], env=env)
    yield service
    service.stop()


def _bulk(n: int, tag: str) -> list[str]:
    return [f"{tag} {i} {LONG}" for i in range(n)]


async def test_interactive_requests_are_served_between_the_pieces_of_a_bulk_request(encoder: Service) -> None:
    async with AsyncInferenceClient(encoder.grpc_url, timeout=600) as client:
        await client.infer("encoder", {"text": ["warm up"]})
        texts = _bulk(QUEUE, "bulk")
        started = time.monotonic()
        bulk = asyncio.create_task(client.infer("encoder", {"text": texts}, {"priority": "bulk"}))
        await asyncio.sleep(0.5)  # the bulk request is queued and its first pieces compute
        served, waits = [], []
        for question in ("how do I rotate the node token?", "which port does the router use?", "what is a chunk?"):
            sent = time.monotonic()
            guard = await client.infer("classifier", {"text": [question]})  # interactive: the default
            vector = await client.infer("encoder", {"text": [question]}, {"priority": "interactive"})
            waits.append(time.monotonic() - sent)
            served.append((guard.output("label").as_strings()[0], vector.output("embedding").shape))
            assert not bulk.done(), "an interactive request waited for the whole bulk request"
        embedding = (await bulk).output("embedding").as_numpy()
        bulk_s = time.monotonic() - started
    assert [shape for _, shape in served] == [[1, 384]] * 3
    assert embedding.shape == (QUEUE, 384)
    # a question waits for at most the bulk piece in flight (2 of the 48 texts here), not for the
    # bulk request: each pair of calls took well under a quarter of the bulk request's time
    assert max(waits) < bulk_s / 4, (waits, bulk_s)
    # the pieces came back in order: each row is its own text's embedding
    with InferenceClient(encoder.grpc_url, timeout=120) as sync:
        alone = sync.infer("encoder", {"text": [texts[0], texts[-1]]}).output("embedding").as_numpy()
    np.testing.assert_allclose(embedding[[0, -1]], alone, atol=1e-4)


async def test_a_full_bulk_queue_is_resource_exhausted_and_interactive_still_passes(encoder: Service) -> None:
    async with AsyncInferenceClient(encoder.grpc_url, timeout=600) as client:
        first = asyncio.create_task(client.infer("encoder", {"text": _bulk(QUEUE, "a")}, {"priority": "bulk"}))
        await asyncio.sleep(0.5)
        start = time.monotonic()
        with pytest.raises(ResourceExhausted) as info:  # a whole queue's worth more: over while any of 'a' waits
            await client.infer("encoder", {"text": _bulk(QUEUE, "b")}, {"priority": "bulk"})
        assert time.monotonic() - start < 2.0  # refused at once, not after waiting
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.message.startswith("the bulk queue is full: ")
        assert info.value.message.endswith(f"more would pass the limit of {QUEUE}; retry later")
        answer = await client.infer("encoder", {"text": ["an interactive question"]})
        assert answer.output("embedding").shape == [1, 384]
        assert not first.done()
        assert (await first).output("embedding").shape == [QUEUE, 384]
        # the queue drained: the refused request goes through now
        again = await client.infer("encoder", {"text": _bulk(QUEUE, "b")}, {"priority": "bulk"})
        assert again.output("embedding").shape == [QUEUE, 384]


@pytest.mark.parametrize("model", ["encoder", "classifier"])
@pytest.mark.parametrize("value", ["urgent", "", "BULK", 1])
def test_a_bad_priority_is_invalid_argument(encoder: Service, model: str, value: object) -> None:
    with InferenceClient(encoder.grpc_url, timeout=60) as client:
        with pytest.raises(InvalidArgument) as info:
            client.infer(model, {"text": ["hello"]}, {"priority": value})  # type: ignore[dict-item]
        if isinstance(value, str):
            assert info.value.message == f"parameter 'priority' must be 'interactive' or 'bulk', got {value!r}"
        else:
            assert info.value.message == f"parameter 'priority' must be a string, got {value!r}"
        assert client.infer(model, {"text": ["hello"]}, {"priority": "bulk"}).outputs
