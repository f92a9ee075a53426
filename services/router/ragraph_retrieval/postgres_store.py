"""PostgreSQL + pgvector behind the :class:`~ragraph_retrieval.store.VectorStore` interface: a
store that several routers and ingest jobs share.

``postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?table=ragraph_vectors][&namespace=NS]`` (also
``postgresql://``). Whatever the URI leaves out comes from libpq's environment: ``PGPASSWORD``
(or a ``~/.pgpass`` / ``PGPASSFILE`` entry) for the password, ``PGHOST``, ``PGPORT``,
``PGUSER``, ``PGDATABASE``, ``PGSSLMODE``...; keep the password out of the URI where you can.

One table holds every namespace: ``(namespace, id)`` is the key, ``embedding`` a ``vector(D)``
(D fixed by the first write), ``metadata`` JSONB (filters: :mod:`.postgres_sql`), ``hash`` the
record's content hash. The table, its indexes and the ``vector`` extension are created on the
first write (under an advisory lock, so concurrent first writers are safe). An HNSW index
(``vector_cosine_ops``) serves queries; ``m`` / ``ef_construction`` set its build, ``ef_search``
its query-time candidate list (``hnsw.ef_search``), and ``hnsw.iterative_scan=strict_order``
keeps scanning past ``ef_search`` until ``top_k`` rows pass the namespace and filter (at most
``max_scan_tuples`` rows, ``hnsw.max_scan_tuples``). Equality filters can also use a GIN index on
the metadata: PostgreSQL's planner picks the HNSW scan or an exact bitmap scan plus sort.

Writes: every call is one transaction (``replace``: the upserts and the deletes together), so a
crash leaves each write fully in or out. An upsert whose id, vector and metadata are unchanged
writes no row version (``ON CONFLICT ... WHERE hash IS DISTINCT FROM``). Connection failures and
deadlocks are retried (every write is idempotent), then surface as UNAVAILABLE.

The interface is synchronous like the other stores (the router calls it in a worker thread);
each thread borrows its own connection from a small pool (``pool=`` connections).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from ragraph_client.errors import InvalidArgument

from . import filters, postgres_sql
from .postgres_pool import Pool, conninfo, redact, vector_from_bytes
from .store import Match, Record, StoreStats, VectorStore, as_vector, check_query, check_record

# libpq connection parameters a URI may carry besides the store's own options
LIBPQ_OPTIONS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "channel_binding",
        "application_name",
        "target_session_attrs",
        "passfile",
        "host",
        "port",
        "dbname",
        "user",
        "connect_timeout",
    }
)
WRITE_BATCH = 500


def content_hash(vector: np.ndarray, metadata: dict[str, Any]) -> bytes:
    meta = json.dumps(metadata, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(vector.astype("<f4").tobytes() + meta.encode("utf-8")).digest()[:16]


def _int(name: str, value: str | int, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidArgument(f"store URI: {name}={value!r} must be an integer from {low} to {high}") from None
    if not low <= number <= high:
        raise InvalidArgument(f"store URI: {name}={value!r} must be an integer from {low} to {high}")
    return number


def _seconds(name: str, value: str | float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise InvalidArgument(f"store URI: {name}={value!r} must be seconds, more than 0 and at most 3600")
    return seconds


def _no_nul(record: Record) -> None:
    """PostgreSQL's text and JSONB cannot hold U+0000."""
    texts = [("id", record.id)] + [(f"metadata field {k!r}", k) for k in record.metadata]
    for key, value in record.metadata.items():
        items = value if isinstance(value, list) else [value]
        texts += [(f"metadata field {key!r}", v) for v in items if isinstance(v, str)]
    for where, text in texts:
        if "\x00" in text:
            raise InvalidArgument(f"record {record.id!r}: {where} holds a NUL character, which PostgreSQL cannot store")


class PostgresStore(VectorStore):
    def __init__(
        self,
        dsn: str,
        *,
        uri: str | None = None,
        namespace: str = "",
        table: str = postgres_sql.DEFAULT_TABLE,
        m: str | int | None = None,
        ef_construction: str | int | None = None,
        ef_search: str | int = 100,  # pgvector's 40 kept 0.96 recall@10 on embedding-like data, 100 0.998
        max_scan_tuples: str | int = 20000,
        pool: str | int = 4,
        timeout: str | float = 30.0,
        retries: str | int = 2,
        **libpq: str,
    ) -> None:
        unknown = sorted(set(libpq) - LIBPQ_OPTIONS)
        if unknown:
            raise InvalidArgument(
                f"store URI: unknown option(s) {unknown} for postgres:// (store options: table, namespace, m, "
                "ef_construction, ef_search, max_scan_tuples, pool, timeout, retries; "
                f"libpq: {', '.join(sorted(LIBPQ_OPTIONS))})"
            )
        self.table = postgres_sql.check_table(table)
        self.m = None if m is None else _int("m", m, 2, 100)
        self.ef_construction = None if ef_construction is None else _int("ef_construction", ef_construction, 4, 1000)
        if (self.ef_construction or 64) < 2 * (self.m or 16):
            raise InvalidArgument(f"store URI: ef_construction must be at least 2 * m ({2 * (self.m or 16)})")
        self.ef_search = _int("ef_search", ef_search, 1, 1000)
        self.timeout = _seconds("timeout", timeout)
        self.uri = redact(uri or dsn)
        self.namespace = namespace
        self.dimension: int | None = None
        settings = {
            "hnsw.ef_search": str(self.ef_search),
            "hnsw.iterative_scan": "strict_order",
            "hnsw.max_scan_tuples": str(_int("max_scan_tuples", max_scan_tuples, 1, 10_000_000)),
        }
        self._pool = Pool(
            conninfo(dsn, libpq), _int("pool", pool, 1, 100), self.timeout, _int("retries", retries, 0, 10), settings
        )

    def _table_dimension(self, conn: psycopg.Connection[Any]) -> int | None:
        row = conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'embedding'",
            [self.table],
        ).fetchone()
        return int(row[0]) if row else None

    def _check_index(self, conn: psycopg.Connection[Any]) -> None:
        """The URI's m / ef_construction, when given, must be what the index was built with."""
        row = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)", [postgres_sql.hnsw_index(self.table)]
        ).fetchone()
        built = dict(o.split("=", 1) for o in (row[0] or [])) if row else {}
        for name, wanted in (("m", self.m), ("ef_construction", self.ef_construction)):
            if wanted is not None and built.get(name, str(wanted)) != str(wanted):
                raise InvalidArgument(
                    f"store URI: {name}={wanted}, but table {self.table}'s HNSW index was built with "
                    f"{name}={built[name]} (drop the index {postgres_sql.hnsw_index(self.table)} to rebuild it, "
                    f"or leave {name} out)"
                )

    def _ready(self, conn: psycopg.Connection[Any], dimension: int | None = None) -> bool:
        """Whether the table exists; a write (``dimension`` given) creates it first."""
        if self.dimension is not None:
            return True
        found = self._table_dimension(conn)
        if found is None and dimension is not None:
            if dimension > postgres_sql.MAX_HNSW_DIMENSION:
                raise InvalidArgument(
                    f"vectors have {dimension} dimensions; pgvector's HNSW index takes at most "
                    f"{postgres_sql.MAX_HNSW_DIMENSION}"
                )
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"ragraph:{self.table}"])
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                for statement in postgres_sql.schema(self.table, dimension, self.m or 16, self.ef_construction or 64):
                    conn.execute(statement)
            found = self._table_dimension(conn)
        if found is None:
            return False
        self._check_index(conn)
        self.dimension = found
        return True

    # --- writes ------------------------------------------------------------------------------

    def _prepare(self, records: Sequence[Record]) -> list[tuple[str, str | None, np.ndarray, Jsonb, bytes]]:
        rows = []
        dimension = self.dimension
        for record in records:
            vector = as_vector(record.vector)
            dimension = dimension if dimension is not None else vector.shape[0]
            check_record(Record(record.id, vector, record.metadata), dimension)
            _no_nul(record)
            rows.append(
                (record.id, record.doc_id, vector, Jsonb(record.metadata), content_hash(vector, record.metadata))
            )
        return sorted(rows, key=lambda row: row[0])  # one lock order for every writer

    def _write(self, namespace: str, records: Sequence[Record], delete_ids: Sequence[str]) -> int:
        rows = self._prepare(records)
        if self.dimension is None and not rows and not delete_ids:
            return 0
        t = sql.Identifier(self.table)
        upsert = sql.SQL(
            "INSERT INTO {t} AS r (namespace, id, doc_id, embedding, metadata, hash)"
            " VALUES (%s, %s, %s, %b::vector, %s, %s)"
            " ON CONFLICT (namespace, id) DO UPDATE SET doc_id = excluded.doc_id, embedding = excluded.embedding,"
            " metadata = excluded.metadata, hash = excluded.hash WHERE r.hash IS DISTINCT FROM excluded.hash"
        ).format(t=t)
        delete = sql.SQL("DELETE FROM {t} WHERE namespace = %s AND id = ANY(%s)").format(t=t)

        def work(conn: psycopg.Connection[Any]) -> int:
            if not self._ready(conn, rows[0][2].shape[0] if rows else None):
                return 0  # no table yet: nothing to delete
            if rows and rows[0][2].shape[0] != self.dimension:
                self._prepare(records)  # names the record whose shape differs from the table's
            deleted = 0
            with conn.transaction(), conn.cursor() as cur:
                for start in range(0, len(delete_ids), WRITE_BATCH):
                    cur.execute(delete, [namespace, list(delete_ids[start : start + WRITE_BATCH])])
                    deleted += cur.rowcount
                for start in range(0, len(rows), WRITE_BATCH):
                    cur.executemany(upsert, [(namespace, *row) for row in rows[start : start + WRITE_BATCH]])
            return deleted

        return self._pool.run("write", work)

    def upsert(self, records: Sequence[Record], namespace: str | None = None) -> int:
        self._write(self.ns(namespace), records, [])
        return len(records)

    def replace(self, upserts: Sequence[Record], delete_ids: Iterable[str], namespace: str | None = None) -> None:
        self._write(self.ns(namespace), upserts, list(delete_ids))

    def delete(self, ids: Sequence[str], namespace: str | None = None) -> int:
        return self._write(self.ns(namespace), [], list(ids))

    def _delete_where(self, what: str, clause: str, params: Sequence[Any]) -> int:
        query = sql.SQL("DELETE FROM {t} WHERE namespace = %s" + clause).format(t=sql.Identifier(self.table))

        def work(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(query, params).rowcount if self._ready(conn) else 0

        return self._pool.run(what, work)

    def delete_document(self, doc_id: str, namespace: str | None = None) -> int:
        return self._delete_where("delete document", " AND doc_id = %s", [self.ns(namespace), doc_id])

    def delete_namespace(self, namespace: str | None = None) -> None:
        self._delete_where("delete namespace", "", [self.ns(namespace)])

    # --- reads -------------------------------------------------------------------------------

    def _select(self, what: str, query: sql.Composed, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        def work(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(query, params).fetchall() if self._ready(conn) else []

        return self._pool.run(what, work)

    def query(
        self,
        vector: np.ndarray,
        top_k: int = 10,
        filter: filters.Node | None = None,
        namespace: str | None = None,
    ) -> list[Match]:
        if self.dimension is None:
            self._pool.run("query", self._ready)  # learns the table's dimension, if it has one yet
        q = check_query(vector, top_k, self.dimension)
        params: list[Any] = [q, self.ns(namespace)]
        where = "" if filter is None else " AND " + postgres_sql.where(filter, params)
        params.append(top_k)
        query = sql.SQL(
            "SELECT id, metadata, embedding <=> %b::vector AS distance FROM {t} WHERE namespace = %s"
            + where
            + " ORDER BY distance LIMIT %s"
        ).format(t=sql.Identifier(self.table))
        rows = self._select("query", query, params)
        # a zero vector has no direction: pgvector's distance is NaN there, ranked last
        return [Match(rid, 0.0 if d != d else 1.0 - float(d), meta) for rid, meta, d in rows]

    def fetch(self, ids: Sequence[str], namespace: str | None = None) -> dict[str, Record]:
        query = sql.SQL(
            "SELECT id, vector_send(embedding), metadata FROM {t} WHERE namespace = %s AND id = ANY(%s)"
        ).format(t=sql.Identifier(self.table))
        out: dict[str, Record] = {}
        for start in range(0, len(ids), WRITE_BATCH):
            part = list(ids[start : start + WRITE_BATCH])
            for rid, raw, meta in self._select("fetch", query, [self.ns(namespace), part]):
                out[rid] = Record(rid, vector_from_bytes(raw), meta)
        return out

    def document_chunks(self, doc_id: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        query = sql.SQL("SELECT id, metadata FROM {t} WHERE namespace = %s AND doc_id = %s").format(
            t=sql.Identifier(self.table)
        )
        return dict(self._select("document chunks", query, [self.ns(namespace), doc_id]))  # type: ignore[arg-type]

    def document_ids(self, namespace: str | None = None) -> set[str]:
        query = sql.SQL("SELECT DISTINCT doc_id FROM {t} WHERE namespace = %s AND doc_id IS NOT NULL").format(
            t=sql.Identifier(self.table)
        )
        return {row[0] for row in self._select("document ids", query, [self.ns(namespace)])}

    def stats(self) -> StoreStats:
        query = sql.SQL("SELECT namespace, count(*) FROM {t} GROUP BY namespace").format(t=sql.Identifier(self.table))
        rows = self._select("stats", query, [])
        return StoreStats(self.dimension, {ns: int(n) for ns, n in rows})

    def close(self) -> None:
        self._pool.close()
