"""The embedded store: the shared filter table, exact top-k against brute force, concurrent
opening, the HNSW option and URI errors. The rest of the store contract (namespaces, documents,
limits, a second connection seeing writes) runs against this store and ``postgres://`` alike in
tests/integration/retrieval/test_store_contract.py."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from ragraph_client.errors import InvalidArgument
from ragraph_retrieval import filters
from ragraph_retrieval.local import LocalStore
from ragraph_retrieval.store import Record, open_store

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
