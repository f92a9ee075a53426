"""The embedded store: records and metadata in SQLite (WAL), vectors searched in memory.

Durability: every write is one SQLite transaction, so a process killed at any instant (kill -9
included) leaves each write either fully in or fully out; ``replace`` puts a document's new chunks
and the deletion of its stale ones in one transaction. ``sync=full`` adds fsync per commit
(survives power loss too); the default ``normal`` is safe against process crashes.

Search: each namespace's vectors are held as one L2-normalised float32 matrix, loaded from SQLite
on first use and reloaded when any connection has changed the namespace since; exact cosine
top-k is one BLAS matrix-vector product plus ``argpartition``. ``index=hnsw`` (needs
``faiss-cpu``) builds an HNSW graph per namespace for large collections; filtered queries always
run exactly over the rows the filter selects.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ragraph_client.errors import InvalidArgument
from ragraph_client.vectors import normalize

from . import filters
from .store import Match, Record, StoreStats, VectorStore, as_vector, check_query, check_record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    rid INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    doc_id TEXT,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL,
    UNIQUE (namespace, id)
);
CREATE INDEX IF NOT EXISTS records_by_doc ON records (namespace, doc_id);
CREATE TABLE IF NOT EXISTS versions (namespace TEXT PRIMARY KEY, version INTEGER NOT NULL);
"""
_INDEXES = ("exact", "hnsw")
_OPEN_TIMEOUT_S = 30.0


def _open_database(path: Path, sync: str) -> sqlite3.Connection:
    """Open (and on first use create) the store file; safe when several processes open it at once.

    Switching to WAL and creating the schema take a write lock. While another connection is
    setting up the same new file, SQLite can answer "database is locked" at once instead of
    waiting in the busy handler, so the set-up is retried until the open timeout.
    """
    # ``timeout`` is SQLite's busy timeout for the connection's whole life, not only this open.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=_OPEN_TIMEOUT_S)
    deadline = time.monotonic() + _OPEN_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
    db.execute(f"PRAGMA synchronous={sync.upper()}")
    return db


@dataclass
class _Matrix:
    """One namespace's vectors as searched: row i is record ``rids[i]`` / ``ids[i]``."""

    version: int
    rids: np.ndarray
    ids: list[str]
    vectors: np.ndarray
    ann: Any = None
    _row_of: dict[int, int] | None = None

    def rows(self, rids: Iterable[int]) -> np.ndarray:
        if self._row_of is None:
            self._row_of = {int(r): i for i, r in enumerate(self.rids)}
        row_of = self._row_of
        return np.fromiter((row_of[r] for r in rids), dtype=np.int64)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    if k >= scores.shape[0]:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class LocalStore(VectorStore):
    def __init__(
        self,
        path: str,
        *,
        uri: str | None = None,
        namespace: str = "",
        index: str = "exact",
        sync: str = "normal",
        ef_search: str | int = 64,
        **unknown: str,
    ) -> None:
        if unknown:
            raise InvalidArgument(f"store URI: unknown option(s) {sorted(unknown)} for local://")
        if index not in _INDEXES:
            raise InvalidArgument(f"store URI: index={index!r}, expected one of {list(_INDEXES)}")
        if sync not in ("normal", "full"):
            raise InvalidArgument(f"store URI: sync={sync!r}, expected normal or full")
        self.path = Path(path or ".ragraph/store")
        self.uri = uri or f"local://{self.path}"
        self.namespace = namespace
        self.index = index
        self.ef_search = int(ef_search)
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = _open_database(self.path / "store.sqlite3", sync)
        self._lock = threading.RLock()
        self._matrices: dict[str, _Matrix] = {}
        row = self._db.execute("SELECT value FROM settings WHERE key = 'dimension'").fetchone()
        self.dimension: int | None = int(row[0]) if row else None

    # --- writes ------------------------------------------------------------------------------

    def _prepare(self, records: Sequence[Record]) -> list[tuple[str, str | None, bytes, str]]:
        rows = []
        for record in records:
            vector = as_vector(record.vector)
            dimension = self.dimension if self.dimension is not None else vector.shape[0]
            check_record(Record(record.id, vector, record.metadata), dimension)
            self.dimension = dimension
            meta = json.dumps(record.metadata, ensure_ascii=False, separators=(",", ":"))
            rows.append((record.id, record.doc_id, vector.tobytes(), meta))
        return rows

    def _bump(self, namespace: str) -> None:
        self._db.execute(
            "INSERT INTO versions (namespace, version) VALUES (?, 1) "
            "ON CONFLICT (namespace) DO UPDATE SET version = version + 1",
            (namespace,),
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front (BEGIN IMMEDIATE) and rolled back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _write(self, namespace: str, rows: list[tuple[str, str | None, bytes, str]], delete_ids: Sequence[str]) -> int:
        with self._transaction() as db:
            if self.dimension is not None:
                db.execute(
                    "INSERT OR IGNORE INTO settings (key, value) VALUES ('dimension', ?)", (str(self.dimension),)
                )
            deleted = 0
            for start in range(0, len(delete_ids), 500):
                part = list(delete_ids[start : start + 500])
                marks = ",".join("?" * len(part))
                cur = db.execute(f"DELETE FROM records WHERE namespace = ? AND id IN ({marks})", [namespace, *part])
                deleted += cur.rowcount
            db.executemany(
                "INSERT INTO records (namespace, id, doc_id, vector, metadata) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (namespace, id) DO UPDATE SET doc_id = excluded.doc_id, "
                "vector = excluded.vector, metadata = excluded.metadata",
                [(namespace, *row) for row in rows],
            )
            if rows or deleted:
                self._bump(namespace)
        return deleted

    def upsert(self, records: Sequence[Record], namespace: str | None = None) -> int:
        rows = self._prepare(records)
        self._write(self.ns(namespace), rows, [])
        return len(rows)

    def replace(self, upserts: Sequence[Record], delete_ids: Iterable[str], namespace: str | None = None) -> None:
        rows = self._prepare(upserts)
        self._write(self.ns(namespace), rows, list(delete_ids))

    def delete(self, ids: Sequence[str], namespace: str | None = None) -> int:
        return self._write(self.ns(namespace), [], list(ids))

    def _delete_where(self, namespace: str, clause: str, params: Sequence[Any]) -> int:
        with self._transaction() as db:
            deleted = int(
                db.execute(f"DELETE FROM records WHERE namespace = ? {clause}", (namespace, *params)).rowcount
            )
            if deleted:
                self._bump(namespace)
        return deleted

    def delete_document(self, doc_id: str, namespace: str | None = None) -> int:
        return self._delete_where(self.ns(namespace), "AND doc_id = ?", [doc_id])

    def delete_namespace(self, namespace: str | None = None) -> None:
        self._delete_where(self.ns(namespace), "", [])

    # --- reads -------------------------------------------------------------------------------

    def _version(self, namespace: str) -> int:
        row = self._db.execute("SELECT version FROM versions WHERE namespace = ?", (namespace,)).fetchone()
        return int(row[0]) if row else 0

    def _matrix(self, namespace: str) -> _Matrix:
        """The namespace's search matrix, reloaded when its version moved (any writer)."""
        with self._lock:
            version = self._version(namespace)
            cached = self._matrices.get(namespace)
            if cached is not None and cached.version == version:
                return cached
            rows = self._db.execute(
                "SELECT rid, id, vector FROM records WHERE namespace = ? ORDER BY rid", (namespace,)
            ).fetchall()
            dim = self.dimension or 0
            if rows:
                raw = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1)
                vectors = normalize(raw)  # float32, as raw is
            else:
                vectors = np.zeros((0, dim), dtype=np.float32)
            matrix = _Matrix(version, np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows], vectors)
            if self.index == "hnsw" and rows:
                matrix.ann = self._build_hnsw(vectors)
            self._matrices[namespace] = matrix
            return matrix

    def _build_hnsw(self, vectors: np.ndarray) -> Any:
        try:
            import faiss
        except ImportError as exc:
            raise InvalidArgument("store URI: index=hnsw needs the faiss-cpu package (pip install faiss-cpu)") from exc
        ann = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        ann.hnsw.efConstruction = 80
        ann.add(vectors)
        ann.hnsw.efSearch = self.ef_search
        return ann

    def query(
        self,
        vector: np.ndarray,
        top_k: int = 10,
        filter: filters.Node | None = None,
        namespace: str | None = None,
    ) -> list[Match]:
        ns = self.ns(namespace)
        q = check_query(vector, top_k, self.dimension)
        matrix = self._matrix(ns)
        if not matrix.ids:
            return []
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        if filter is not None:
            params: list[Any] = [ns]
            where = filters.to_sql(filter, params)
            with self._lock:
                rids = [
                    r[0] for r in self._db.execute(f"SELECT rid FROM records r WHERE namespace = ? AND {where}", params)
                ]
            rows = matrix.rows(rids)
            if rows.size == 0:
                return []
            scores = matrix.vectors[rows] @ q
            best = rows[_top_k(scores, top_k)]
            best_scores = matrix.vectors[best] @ q
        elif matrix.ann is not None:
            found_scores, found = matrix.ann.search(q.reshape(1, -1), min(top_k, len(matrix.ids)))
            keep = found[0] >= 0
            best, best_scores = found[0][keep], found_scores[0][keep]
        else:
            scores = matrix.vectors @ q
            best = _top_k(scores, top_k)
            best_scores = scores[best]
        return self._matches(ns, matrix, best, best_scores)

    def _matches(self, ns: str, matrix: _Matrix, rows: np.ndarray, scores: np.ndarray) -> list[Match]:
        rids = [int(matrix.rids[i]) for i in rows]
        marks = ",".join("?" * len(rids))
        with self._lock:
            found = dict(self._db.execute(f"SELECT rid, metadata FROM records WHERE rid IN ({marks})", rids).fetchall())
        return [
            Match(matrix.ids[i], float(s), json.loads(found[rid]))
            for i, s, rid in zip(rows, scores, rids, strict=True)
            if rid in found  # deleted by another writer since the matrix was loaded
        ]

    def fetch(self, ids: Sequence[str], namespace: str | None = None) -> dict[str, Record]:
        ns, out = self.ns(namespace), {}
        with self._lock:
            for start in range(0, len(ids), 500):
                part = list(ids[start : start + 500])
                marks = ",".join("?" * len(part))
                for rid, blob, meta in self._db.execute(
                    f"SELECT id, vector, metadata FROM records WHERE namespace = ? AND id IN ({marks})", [ns, *part]
                ):
                    out[rid] = Record(rid, np.frombuffer(blob, dtype=np.float32).copy(), json.loads(meta))
        return out

    def document_chunks(self, doc_id: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, metadata FROM records WHERE namespace = ? AND doc_id = ?", (self.ns(namespace), doc_id)
            ).fetchall()
        return {rid: json.loads(meta) for rid, meta in rows}

    def document_ids(self, namespace: str | None = None) -> set[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT doc_id FROM records WHERE namespace = ? AND doc_id IS NOT NULL", (self.ns(namespace),)
            ).fetchall()
        return {r[0] for r in rows}

    def stats(self) -> StoreStats:
        with self._lock:
            rows = self._db.execute("SELECT namespace, COUNT(*) FROM records GROUP BY namespace").fetchall()
        return StoreStats(self.dimension, {ns: int(n) for ns, n in rows})

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
