"""The Pinecone backend through the real ``pinecone`` SDK against PineconeTestDouble (a local
HTTP test double of Pinecone's REST API, not Pinecone), plus the real service when
PINECONE_API_KEY and RAGRAPH_PINECONE_TEST_INDEX are set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ragraph_client.errors import InvalidArgument, Unauthenticated, Unavailable
from ragraph_retrieval import filters
from ragraph_retrieval.pinecone_store import MAX_REQUEST_BYTES, PineconeStore
from ragraph_retrieval.store import MAX_METADATA_BYTES, Record, open_store

from tests.fixtures.filter_cases import FILTER_CASES, FILTER_RECORDS, case_ids
from tests.fixtures.pinecone_double import PineconeTestDouble

KEY = "test-key"


@pytest.fixture(autouse=True)
def _fresh_retry_budget() -> None:
    """The SDK keeps a process-wide retry budget per host; injected failures must not drain it
    across tests."""
    from pinecone._internal.http_client import get_budget_registry

    get_budget_registry()._reset()


@pytest.fixture(scope="module")
def double() -> Iterator[PineconeTestDouble]:
    with PineconeTestDouble(index="ragraph-test", dimension=8, api_key=KEY) as server:
        yield server


def _store(double: PineconeTestDouble, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> PineconeStore:
    monkeypatch.setenv("PINECONE_API_KEY", KEY)
    store = open_store(f"pinecone://ragraph-test?controller={double.url}{extra}")
    assert isinstance(store, PineconeStore)
    return store


def _vec(seed: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


@pytest.fixture(scope="module")
def filter_store(double: PineconeTestDouble) -> Iterator[PineconeStore]:
    mp = pytest.MonkeyPatch()
    store = _store(double, mp, "&namespace=filters")
    store.upsert([Record(r["id"], _vec(i), r["metadata"]) for i, r in enumerate(FILTER_RECORDS)])
    yield store
    mp.undo()


@pytest.mark.parametrize(("name", "spec", "expected"), FILTER_CASES, ids=case_ids())
def test_filter_table(filter_store: PineconeStore, name: str, spec: dict, expected: set[str]) -> None:
    found = {m.id for m in filter_store.query(np.ones(8, np.float32), top_k=100, filter=filters.parse(spec))}
    assert found == expected, name


def test_oversize_metadata_is_rejected_before_any_request(
    double: PineconeTestDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(double, monkeypatch)
    double.reset_requests()
    big = Record("big", _vec(1), {"text": "x" * MAX_METADATA_BYTES})
    with pytest.raises(InvalidArgument, match="limit of 40960"):
        store.upsert([Record("fine", _vec(0), {"a": "b"}), big])
    with pytest.raises(InvalidArgument, match="metadata field 'm'"):
        store.upsert([Record("nested", _vec(0), {"m": {"x": 1}})])
    assert double.requests == []  # not even the index lookup


def test_upserts_are_split_within_pinecone_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with PineconeTestDouble(index="wide", dimension=384, api_key=KEY) as wide:
        monkeypatch.setenv("PINECONE_API_KEY", KEY)
        store = open_store(f"pinecone://wide?controller={wide.url}&namespace=bulk")
        rng = np.random.default_rng(0)
        records = [Record(f"r{i}", rng.standard_normal(384).astype(np.float32), {"n": i}) for i in range(2500)]
        assert store.upsert(records) == 2500
        upserts = [body for method, path, body in wide.requests if path == "/vectors/upsert"]
        assert len(upserts) >= 3
        assert all(len(b["vectors"]) <= 1000 for b in upserts)
        # the double rejects bodies over 2 MB with a 400: reaching here means none was
        assert sum(len(b["vectors"]) for b in upserts) == 2500
        assert len(wide.records("bulk")) == 2500
        assert store.stats().namespaces == {"bulk": 2500}
        assert MAX_REQUEST_BYTES == 2 * 1024 * 1024


def test_transient_errors_are_retried(double: PineconeTestDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(double, monkeypatch, "&namespace=retry&retries=1")
    store.upsert([Record("a", _vec(1), {"k": "v"})])
    double.fail_next(5, 503, retry_after=0)  # more than the SDK's own 3 retries: ours finish it
    assert [m.id for m in store.query(_vec(1), 1)] == ["a"]
    double.fail_next(100, 503, retry_after=0)
    with pytest.raises(Unavailable, match="pinecone query"):
        store.query(_vec(1), 1)
    double.fail_next(0)


def test_index_host_is_looked_up_once(double: PineconeTestDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragraph_retrieval import pinecone_store

    monkeypatch.setattr(pinecone_store, "_HOSTS", {})
    double.reset_requests()
    for _ in range(3):
        _store(double, monkeypatch, "&namespace=hosts").stats()
    lookups = [path for method, path, _ in double.requests if path.startswith("/indexes/")]
    assert lookups == ["/indexes/ragraph-test"]


def test_errors_map_to_grpc_codes(double: PineconeTestDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINECONE_API_KEY", raising=False)
    keyless = open_store(f"pinecone://ragraph-test?controller={double.url}")  # a router starts without it
    with pytest.raises(Unauthenticated, match="PINECONE_API_KEY"):
        keyless.query(np.ones(8, np.float32))
    monkeypatch.setenv("PINECONE_API_KEY", "wrong-key")
    with pytest.raises(Unauthenticated):
        open_store(f"pinecone://ragraph-test?host={double.url}").stats()
    store = _store(double, monkeypatch, "&namespace=errors")
    store.upsert([Record("a", _vec(1))])
    with pytest.raises(InvalidArgument, match=r"shape \[3\]"):
        store.query(np.ones(3, np.float32))
    with pytest.raises(InvalidArgument, match="unknown option"):
        open_store("pinecone://x?colour=blue")


def test_documents_fetch_delete(double: PineconeTestDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(double, monkeypatch, "&namespace=docs")
    store.delete_namespace()
    chunks = [Record(f"a.md#{i}", _vec(i), {"doc_id": "a.md", "chunk": i}) for i in range(130)]
    chunks += [Record("a.md#x.md#0", _vec(7), {"doc_id": "a.md#x.md", "chunk": 0})]  # a '#' in a doc id
    chunks += [Record(f"b.md#{i}", _vec(200 + i), {"doc_id": "b.md", "chunk": i}) for i in range(2)]
    store.upsert(chunks)
    assert store.document_ids() == {"a.md", "a.md#x.md", "b.md"}
    assert len(store.document_chunks("a.md")) == 130  # more than one list page and fetch batch
    assert set(store.document_chunks("a.md#x.md")) == {"a.md#x.md#0"}
    fetched = store.fetch(["b.md#1", "nope"])
    assert list(fetched) == ["b.md#1"] and np.allclose(fetched["b.md#1"].vector, _vec(201), atol=1e-6)
    assert store.delete_document("a.md") == 130
    assert store.document_ids() == {"a.md#x.md", "b.md"}
    store.replace([Record("b.md#0", _vec(5), {"doc_id": "b.md", "chunk": 0})], ["b.md#1"])
    assert set(store.document_chunks("b.md")) == {"b.md#0"}
    store.delete_namespace()
    assert store.document_ids() == set()


def test_ingest_into_pinecone_is_idempotent(
    tmp_path: Path, encoder_service: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragraph_retrieval.chunking import Chunker
    from ragraph_retrieval.embedder import EncoderEmbedder
    from ragraph_retrieval.ingest import Ingestor
    from ragraph_retrieval.tokens import encoder_counter

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"note{i}.md").write_text("\n\n".join(f"Note {i} paragraph {p}. " * 12 for p in range(5)))
    counter, limit = encoder_counter()
    with PineconeTestDouble(index="docs", dimension=384, api_key=KEY) as server:
        monkeypatch.setenv("PINECONE_API_KEY", KEY)
        store = open_store(f"pinecone://docs?controller={server.url}&namespace=kb")
        with EncoderEmbedder(encoder_service.grpc_url) as embedder:  # type: ignore[attr-defined]
            ingestor = Ingestor(store, embedder, Chunker(counter, limit, 64, 8))
            first = ingestor.run([str(corpus)])
            assert first.added == 4 and len(server.records("kb")) == first.chunks_written
            server.reset_requests()
            again = ingestor.run([str(corpus)])
            assert again.unchanged == 4 and again.chunks_written == 0
            writes = [p for _, p, _ in server.requests if p in ("/vectors/upsert", "/vectors/delete")]
            assert writes == []
            (corpus / "note2.md").write_text("Only one short paragraph now.")
            (corpus / "note3.md").unlink()
            edited = ingestor.run([str(corpus)], prune=True)
            assert (edited.updated, edited.deleted, edited.unchanged) == (1, 1, 2)
            assert store.document_ids() == {"note0.md", "note1.md", "note2.md"}
            assert set(store.document_chunks("note2.md")) == {"note2.md#0"}


@pytest.mark.skipif(
    not (os.environ.get("PINECONE_API_KEY") and os.environ.get("RAGRAPH_PINECONE_TEST_INDEX")),
    reason="real Pinecone: set PINECONE_API_KEY and RAGRAPH_PINECONE_TEST_INDEX (a 384-d cosine index)",
)
def test_real_pinecone_round_trip() -> None:
    import time

    namespace = f"ragraph-test-{uuid.uuid4().hex[:8]}"
    store = open_store(f"pinecone://{os.environ['RAGRAPH_PINECONE_TEST_INDEX']}?namespace={namespace}")
    try:
        records = [Record(f"d.md#{i}", _vec(i, 384), {"doc_id": "d.md", "n": i}) for i in range(5)]
        store.upsert(records)
        deadline = time.monotonic() + 60  # serverless writes are eventually consistent
        while store.stats().namespaces.get(namespace, 0) < 5 and time.monotonic() < deadline:
            time.sleep(2)
        assert store.query(_vec(3, 384), 1)[0].id == "d.md#3"
        found = store.query(_vec(3, 384), 5, filters.parse({"n": {"$gte": 3}}))
        assert {m.id for m in found} == {"d.md#3", "d.md#4"}
    finally:
        store.delete_namespace()
