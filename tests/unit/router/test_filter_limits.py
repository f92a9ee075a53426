"""Filter limits: past each one a filter is INVALID_ARGUMENT naming where, before any store
sees it; at each one it runs on the embedded store (SQLite's parser and expression limits hold)
and matches what it should."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ragraph_client.errors import InvalidArgument
from ragraph_retrieval import filters
from ragraph_retrieval.local import LocalStore
from ragraph_retrieval.store import Record


def _nested(depth: int) -> dict:
    spec: dict = {"n": 1}
    for _ in range(depth):
        spec = {"$or": [spec, {"n": 2}]}
    return spec


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (_nested(filters.MAX_DEPTH + 1), "$and/$or nested deeper than 8 levels"),
        ({"$and": [{f"f{i}": i} for i in range(filters.MAX_CONDITIONS + 1)]}, "more than 128 field conditions"),
        ({"doc": {"$in": [str(i) for i in range(filters.MAX_LIST + 1)]}}, "$in list holds 1025 values, more than 1024"),
        ({"doc": {"$nin": list(range(filters.MAX_LIST + 1))}}, "$nin list holds 1025 values, more than 1024"),
        ({f"f{i}": {"$in": list(range(1000))} for i in range(5)}, "more than 4096 values in all"),
        ({"n": 2**63}, "field 'n': $eq integer 9223372036854775808 is outside signed 64 bits"),
        ({"n": {"$gt": -(2**63) - 1}}, "$gt integer -9223372036854775809 is outside signed 64 bits"),
        ({"n": {"$in": [1, 2**64]}}, "$in integer 18446744073709551616 is outside signed 64 bits"),
        ({"n": {"$lt": float("inf")}}, "$lt wants a finite number, got inf"),
        ({"x" * 257: 1}, "longer than 256 characters"),
    ],
)
def test_past_a_limit_is_invalid_argument(spec: dict, needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        filters.parse(spec)
    assert needle in info.value.message
    text = json.dumps(spec)  # the same as JSON text, as requests send it (inf is not JSON)
    with pytest.raises(InvalidArgument) as again:
        filters.load(text)
    assert (needle if "Infinity" not in text else "Infinity is not valid JSON") in again.value.message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"n": {"$gt": 1e999}}', "$gt wants a finite number, got inf"),  # JSON overflows to inf
        ('{"n": ' * 40 + "1" + "}" * 40, "filter is nested deeper than 32 levels"),
        ('{"$or": ' * 3000 + "1" + "}" * 3000, "filter is nested deeper than 32 levels"),  # RecursionError before
        ('{"doc_id": "\\ud800"}', "filter at doc_id: string holds a lone UTF-16 surrogate"),
        ('{"n": NaN}', "filter is not valid JSON: NaN is not valid JSON"),
    ],
)
def test_filter_text_past_a_limit_is_invalid_argument(text: str, needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        filters.load(text)
    assert needle in info.value.message


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    store = LocalStore(str(tmp_path_factory.mktemp("limits") / "store"))
    rng = np.random.default_rng(0)
    records = [
        Record(f"r{i}", rng.standard_normal(8).astype(np.float32), {"doc": f"d{i}", "n": i, "tags": [f"t{i}"]})
        for i in range(20)
    ]
    store.upsert(records)
    yield store
    store.close()


def _found(store: LocalStore, spec: dict) -> set[str]:
    node = filters.parse(spec)
    return {m.id for m in store.query(np.ones(8, dtype=np.float32), top_k=100, filter=node)}


def test_a_filter_at_every_limit_runs_on_sqlite(store: LocalStore) -> None:
    strings = ["d3", "t5", *[f"x{i}" for i in range(filters.MAX_LIST - 2)]]
    numbers = [7, 2**63 - 1, -(2**63), *range(100, 100 + filters.MAX_LIST - 3)]
    assert _found(store, {"doc": {"$in": strings}}) == {"r3"}
    assert _found(store, {"tags": {"$in": strings}}) == {"r5"}  # list fields match any element
    assert _found(store, {"n": {"$in": numbers}}) == {"r7"}
    assert _found(store, {"n": {"$nin": numbers}, "doc": {"$in": ["d7", "d8"]}}) == {"r8"}
    deep = _nested(filters.MAX_DEPTH)  # n == 1 or n == 2 at every level
    assert _found(store, deep) == {"r1", "r2"}
    many = {"$and": [{"n": {"$gte": 0}} for _ in range(filters.MAX_CONDITIONS - 1)] + [{"n": {"$lt": 3}}]}
    assert _found(store, many) == {"r0", "r1", "r2"}
    wide = {f"f{i}": {"$nin": list(range(1024))} for i in range(4)}  # 4096 values, every one bound
    assert _found(store, wide) == {f"r{i}" for i in range(20)}


def test_long_in_lists_keep_their_meaning(tmp_path: Path) -> None:
    """Strings never equal numbers, ints equal floats, booleans are no numbers: as before the
    lists became SQL IN lists."""
    store = LocalStore(str(tmp_path / "store"))
    vectors = np.eye(8, dtype=np.float32)
    meta = [{"v": "2001"}, {"v": 2001}, {"v": 2001.0}, {"v": True}, {"v": ["2001", "x"]}, {}]
    store.upsert([Record(f"r{i}", vectors[i], m) for i, m in enumerate(meta)])
    try:
        assert _found(store, {"v": {"$in": ["2001"]}}) == {"r0", "r4"}
        assert _found(store, {"v": {"$in": [2001]}}) == {"r1", "r2"}
        assert _found(store, {"v": {"$in": [1, 2001.0, "nope"]}}) == {"r1", "r2"}
        assert _found(store, {"v": {"$nin": ["2001", 1]}}) == {"r1", "r2", "r3", "r5"}
    finally:
        store.close()
