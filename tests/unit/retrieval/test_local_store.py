"""The embedded store: the shared filter table, exact top-k against brute force, namespaces,
document operations, limits, and a second connection seeing writes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from ragraph_client.errors import InvalidArgument
from ragraph_retrieval import filters
from ragraph_retrieval.local import LocalStore
from ragraph_retrieval.store import MAX_METADATA_BYTES, Record, open_store

from tests.fixtures.filter_cases import FILTER_CASES, FILTER_RECORDS, INVALID_FILTERS, case_ids, invalid_case_ids


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(scope="module")
def filter_store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    store = LocalStore(str(tmp_path_factory.mktemp("filters") / "store"))
    vectors = _vectors(len(FILTER_RECORDS), 8)
    store.upsert([Record(r["id"], vectors[i], r["metadata"]) for i, r in enumerate(FILTER_RECORDS)])
    return store


@pytest.mark.parametrize(("name", "spec", "expected"), FILTER_CASES, ids=case_ids())
def test_filter_table(filter_store: LocalStore, name: str, spec: dict, expected: set[str]) -> None:
    query = np.ones(8, dtype=np.float32)
    found = {m.id for m in filter_store.query(query, top_k=100, filter=filters.parse(spec))}
    assert found == expected, name


@pytest.mark.parametrize(("name", "spec", "needle"), INVALID_FILTERS, ids=invalid_case_ids())
def test_invalid_filters_name_the_culprit(name: str, spec: object, needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        filters.parse(spec)
    assert needle in str(info.value), name


def test_filter_json_text_errors() -> None:
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        filters.load("{genre: drama}")
    assert filters.load("  ") is None
    assert filters.load('{"genre": "drama"}') == filters.Cond("genre", "$eq", "drama")


def test_exact_top_k_matches_brute_force(tmp_path: Path) -> None:
    vectors = _vectors(3000, 32)
    store = LocalStore(str(tmp_path / "s"))
    store.upsert([Record(f"v{i}", v, {"n": i}) for i, v in enumerate(vectors)])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for q in _vectors(5, 32, seed=1):
        expected = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:10]
        matches = store.query(q, top_k=10)
        assert [m.id for m in matches] == [f"v{i}" for i in expected]
        assert all(a.score >= b.score for a, b in zip(matches, matches[1:], strict=False))
        assert matches[0].metadata == {"n": int(expected[0])}
    # filtered: the same ranking restricted to the rows the filter keeps
    q = _vectors(1, 32, seed=2)[0]
    keep = [i for i in range(3000) if i % 7 == 0]
    expected = sorted(keep, key=lambda i: -float(unit[i] @ (q / np.linalg.norm(q))))[:5]
    got = store.query(q, top_k=5, filter=filters.parse({"n": {"$in": keep}}))
    assert [m.id for m in got] == [f"v{i}" for i in expected]


def test_namespaces_documents_fetch_delete(tmp_path: Path) -> None:
    store = open_store(f"local://{tmp_path}/s?namespace=docs")
    assert isinstance(store, LocalStore) and store.namespace == "docs"
    v = _vectors(6, 4)
    store.upsert([Record(f"a.md#{i}", v[i], {"doc_id": "a.md", "chunk": i}) for i in range(3)])
    store.upsert([Record(f"b.md#{i}", v[3 + i], {"doc_id": "b.md", "chunk": i}) for i in range(3)])
    store.upsert([Record("a.md#0", v[0], {"doc_id": "a.md"})], namespace="other")
    assert store.stats().namespaces == {"docs": 6, "other": 1}
    assert store.document_ids() == {"a.md", "b.md"}
    assert set(store.document_chunks("a.md")) == {"a.md#0", "a.md#1", "a.md#2"}
    fetched = store.fetch(["a.md#1", "missing"])
    assert list(fetched) == ["a.md#1"] and np.allclose(fetched["a.md#1"].vector, v[1])
    assert store.delete_document("a.md") == 3
    assert store.delete(["b.md#0", "nope"]) == 1
    assert store.stats().namespaces == {"docs": 2, "other": 1}
    store.delete_namespace("other")
    assert store.stats().namespaces == {"docs": 2}
    assert [m.id for m in store.query(v[4], 1)] == ["b.md#1"]


def test_replace_is_one_transaction(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "s"))
    v = _vectors(4, 4)
    store.upsert([Record(f"d#{i}", v[i], {"doc_id": "d"}) for i in range(3)])
    bad = Record("d#0", np.ones(5, dtype=np.float32), {"doc_id": "d"})  # wrong dimension
    with pytest.raises(InvalidArgument, match="shape"):
        store.replace([bad], ["d#1", "d#2"])
    assert set(store.document_chunks("d")) == {"d#0", "d#1", "d#2"}  # nothing was deleted
    store.replace([Record("d#0", v[3], {"doc_id": "d"})], ["d#1", "d#2"])
    assert set(store.document_chunks("d")) == {"d#0"}


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        (Record("", np.ones(4, np.float32)), "record id"),
        (Record("x", np.ones(4, np.float32), {"m": None}), "metadata field 'm'"),
        (Record("x", np.ones(4, np.float32), {"m": {"nested": 1}}), "metadata field 'm'"),
        (Record("x", np.ones(4, np.float32), {"m": [1, 2]}), "metadata field 'm'"),
        (Record("x", np.array([1, np.nan, 0, 0], np.float32)), "NaN"),
        (Record("x", np.ones(4, np.float32), {"text": "x" * MAX_METADATA_BYTES}), "limit of 40960"),
    ],
)
def test_bad_records_are_rejected_naming_the_field(tmp_path: Path, record: Record, needle: str) -> None:
    store = LocalStore(str(tmp_path / "s"))
    store.upsert([Record("ok", np.ones(4, np.float32))])
    with pytest.raises(InvalidArgument) as info:
        store.upsert([record])
    assert needle in str(info.value)
    assert store.stats().total == 1


def test_query_validation(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "s"))
    assert store.query(np.ones(4, np.float32)) == []  # empty store
    store.upsert([Record("a", np.ones(4, np.float32))])
    with pytest.raises(InvalidArgument, match="top_k"):
        store.query(np.ones(4, np.float32), top_k=0)
    with pytest.raises(InvalidArgument, match=r"shape \[3\]"):
        store.query(np.ones(3, np.float32))


def test_second_connection_sees_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    reader, writer = LocalStore(path), LocalStore(path)
    writer.upsert([Record("a", np.array([1, 0], np.float32))])
    assert [m.id for m in reader.query(np.array([0, 1], np.float32))] == ["a"]
    writer.upsert([Record("b", np.array([0, 1], np.float32))])
    assert [m.id for m in reader.query(np.array([0, 1], np.float32))][0] == "b"
    writer.delete(["b"])
    assert [m.id for m in reader.query(np.array([0, 1], np.float32))] == ["a"]



def _open_together(path: str, n: int) -> list[BaseException]:
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            LocalStore(path).upsert([Record(f"r{threading.get_ident()}", np.ones(2, np.float32))])
        except BaseException as error:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_many_connections_create_one_store_at_once(tmp_path: Path) -> None:
    """Several routers started together on a new store path (CI saw "database is locked")."""
    for trial in range(40):
        path = str(tmp_path / f"s{trial}")
        errors = _open_together(path, 6)
        assert errors == [], f"trial {trial}: {errors[0]!r}"
        assert LocalStore(path).stats().total == 6

def test_hnsw_index_option(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    vectors = _vectors(2000, 32)
    store = open_store(f"local://{tmp_path}/s?index=hnsw")
    store.upsert([Record(f"v{i}", v) for i, v in enumerate(vectors)])
    exact = LocalStore(str(tmp_path / "s"))
    hits = 0
    for q in _vectors(20, 32, seed=3):
        hits += len({m.id for m in store.query(q, 10)} & {m.id for m in exact.query(q, 10)})
    assert hits / 200 >= 0.9


def test_uri_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="scheme"):
        open_store("s3://bucket")
    with pytest.raises(InvalidArgument, match="index="):
        open_store(f"local://{tmp_path}/s?index=ivf")
    with pytest.raises(InvalidArgument, match="unknown option"):
        open_store(f"local://{tmp_path}/s?colour=blue")
