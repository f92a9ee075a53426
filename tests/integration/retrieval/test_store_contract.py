"""The store contract, run unchanged against every store several processes can open: the embedded
``local://`` store and ``postgres://`` (a real PostgreSQL + pgvector). Namespaces and documents,
fetch and delete, ``replace`` as one write, bad records refused before anything is written, query
checks, and a second store on the same location seeing the first one's writes. (The filter table
runs per backend: tests/unit/retrieval/test_local_store.py, test_postgres_store.py,
test_pinecone_store.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from ragraph_client.errors import InvalidArgument
from ragraph_retrieval.store import MAX_METADATA_BYTES, Record, VectorStore, open_store

from tests.fixtures.postgres_server import PostgresServer

Opener = Callable[..., VectorStore]  # (namespace="", **options) -> a store on the test's location


@pytest.fixture(params=["local", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    if request.param == "local":
        base = f"local://{tmp_path}/store"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        base = server.uri(f"t_{uuid.uuid4().hex[:12]}")
    opened: list[VectorStore] = []

    def open_one(namespace: str = "") -> VectorStore:
        sep = "&" if "?" in base else "?"
        store = open_store(base + (f"{sep}namespace={namespace}" if namespace else ""))
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def _vectors(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_namespaces_documents_fetch_delete(opener: Opener) -> None:
    store = opener("docs")
    assert store.namespace == "docs"
    v = _vectors(6)
    store.upsert([Record(f"a.md#{i}", v[i], {"doc_id": "a.md", "chunk": i}) for i in range(3)])
    store.upsert([Record(f"b.md#{i}", v[3 + i], {"doc_id": "b.md", "chunk": i}) for i in range(3)])
    store.upsert([Record("a.md#0", v[0], {"doc_id": "a.md"})], namespace="other")
    assert store.stats().namespaces == {"docs": 6, "other": 1} and store.stats().dimension == 4
    assert store.document_ids() == {"a.md", "b.md"} and store.document_ids("other") == {"a.md"}
    assert set(store.document_chunks("a.md")) == {"a.md#0", "a.md#1", "a.md#2"}
    assert store.document_chunks("a.md", "other") == {"a.md#0": {"doc_id": "a.md"}}
    fetched = store.fetch(["a.md#1", "missing"])
    assert list(fetched) == ["a.md#1"] and np.array_equal(fetched["a.md#1"].vector, v[1])
    assert fetched["a.md#1"].metadata == {"doc_id": "a.md", "chunk": 1}
    assert [m.id for m in store.query(v[0], 1, namespace="other")] == ["a.md#0"]
    assert store.delete_document("a.md") == 3
    assert store.delete(["b.md#0", "nope"]) == 1
    assert store.stats().namespaces == {"docs": 2, "other": 1}
    store.delete_namespace("other")
    assert store.stats().namespaces == {"docs": 2}
    assert [m.id for m in store.query(v[4], 1)] == ["b.md#1"]
    assert store.query(v[4], 1, namespace="nothing-here") == []


def test_replace_is_one_transaction(opener: Opener) -> None:
    store = opener()
    v = _vectors(4)
    store.upsert([Record(f"d#{i}", v[i], {"doc_id": "d"}) for i in range(3)])
    bad = Record("d#0", np.ones(5, dtype=np.float32), {"doc_id": "d"})  # wrong dimension
    with pytest.raises(InvalidArgument, match="shape"):
        store.replace([bad], ["d#1", "d#2"])
    assert set(store.document_chunks("d")) == {"d#0", "d#1", "d#2"}  # nothing was deleted
    store.replace([Record("d#0", v[3], {"doc_id": "d"})], ["d#1", "d#2"])
    assert set(store.document_chunks("d")) == {"d#0"}
    assert np.array_equal(store.fetch(["d#0"])["d#0"].vector, v[3])


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        (Record("", np.ones(4, np.float32)), "record id"),
        (Record("x", np.ones(4, np.float32), {"m": None}), "metadata field 'm'"),
        (Record("x", np.ones(4, np.float32), {"m": {"nested": 1}}), "metadata field 'm'"),
        (Record("x", np.ones(4, np.float32), {"m": [1, 2]}), "metadata field 'm'"),
        (Record("x", np.array([1, np.nan, 0, 0], np.float32)), "NaN"),
        (Record("x", np.ones(4, np.float32), {"text": "x" * MAX_METADATA_BYTES}), "limit of 40960"),
        (Record("x", np.ones(5, np.float32)), "shape [5]"),
    ],
)
def test_bad_records_are_rejected_naming_the_field(opener: Opener, record: Record, needle: str) -> None:
    store = opener()
    store.upsert([Record("ok", np.ones(4, np.float32))])
    with pytest.raises(InvalidArgument) as info:
        store.upsert([Record("fine", np.ones(4, np.float32)), record])
    assert needle in str(info.value)
    assert store.stats().total == 1


def test_query_validation(opener: Opener) -> None:
    store = opener()
    assert store.query(np.ones(4, np.float32)) == []  # empty store
    store.upsert([Record("a", np.ones(4, np.float32))])
    with pytest.raises(InvalidArgument, match="top_k"):
        store.query(np.ones(4, np.float32), top_k=0)
    with pytest.raises(InvalidArgument, match=r"shape \[3\]"):
        store.query(np.ones(3, np.float32))


def test_a_second_store_sees_writes(opener: Opener) -> None:
    reader, writer = opener(), opener()
    writer.upsert([Record("a", np.array([1, 0], np.float32))])
    assert [m.id for m in reader.query(np.array([0, 1], np.float32))] == ["a"]
    writer.upsert([Record("b", np.array([0, 1], np.float32))])
    assert [m.id for m in reader.query(np.array([0, 1], np.float32))][0] == "b"
    writer.delete(["b"])
    assert [m.id for m in reader.query(np.array([0, 1], np.float32))] == ["a"]
    with pytest.raises(InvalidArgument, match=r"shape \[3\]"):
        opener().query(np.ones(3, np.float32))  # a third one learns the dimension from the data
