"""The vector store interface every backend implements, and the URI that picks one.

``local://PATH`` is the embedded store (SQLite + numpy, :mod:`.local`); ``pinecone://INDEX`` is
Pinecone (:mod:`.pinecone_store`); ``postgres://USER@HOST:PORT/DB`` (or ``postgresql://``) is
PostgreSQL + pgvector (:mod:`.postgres_store`). Query parameters configure each, e.g.
``local://.ragraph/store?index=hnsw``, ``pinecone://docs?namespace=prod&host=http://localhost:5081``
or ``postgres://ragraph@db:5432/ragraph?table=docs&ef_search=100``.
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import numpy as np
from ragraph_client.errors import InvalidArgument

from .filters import Node

DEFAULT_URI = "local://.ragraph/store"
STORE_ENV = "RAGRAPH_STORE"
# Pinecone's documented per-record metadata limit; the embedded store holds records to it too,
# so a corpus that ingests locally also ingests into Pinecone.
MAX_METADATA_BYTES = 40 * 1024
MAX_ID_BYTES = 512


@dataclass(frozen=True)
class Record:
    id: str
    vector: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def doc_id(self) -> str | None:
        value = self.metadata.get("doc_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Match:
    id: str
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class StoreStats:
    dimension: int | None
    namespaces: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.namespaces.values())


def metadata_bytes(metadata: Mapping[str, Any]) -> int:
    return len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def check_record(record: Record, dimension: int | None) -> None:
    """Raise InvalidArgument naming the record and field unless it fits both backends' rules."""
    rid = record.id
    if not isinstance(rid, str) or not rid or len(rid.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidArgument(f"record id {rid!r}: must be a non-empty string of at most {MAX_ID_BYTES} bytes")
    vector = record.vector
    if vector.ndim != 1 or (dimension is not None and vector.shape[0] != dimension):
        raise InvalidArgument(f"record {rid!r}: vector has shape {list(vector.shape)}, the store wants [{dimension}]")
    if not np.isfinite(vector).all():
        raise InvalidArgument(f"record {rid!r}: vector holds NaN or infinity")
    for key, value in record.metadata.items():
        ok = (
            isinstance(value, str | bool)
            or (isinstance(value, int | float) and math.isfinite(value))
            or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        )
        if not isinstance(key, str) or not ok:
            raise InvalidArgument(
                f"record {rid!r}: metadata field {key!r} must be a string, number, boolean or list of strings"
            )
    size = metadata_bytes(record.metadata)
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"record {rid!r}: metadata is {size} bytes, more than the limit of {MAX_METADATA_BYTES} per record"
        )


def as_vector(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32)


def check_query(vector: np.ndarray, top_k: int, dimension: int | None) -> np.ndarray:
    """The query vector as float32, or InvalidArgument naming what is wrong."""
    if top_k < 1:
        raise InvalidArgument(f"top_k must be at least 1, got {top_k}")
    q = as_vector(vector)
    if dimension is not None and q.shape != (dimension,):
        raise InvalidArgument(f"query vector has shape {list(q.shape)}, the store holds [{dimension}]")
    return q


class VectorStore(ABC):
    """What the retriever, ingest and search need from a vector database.

    Namespaces partition a store; ``""`` is the default one. Scores are cosine similarities
    (higher is closer). Filters arrive parsed (:func:`ragraph_retrieval.filters.parse`)."""

    uri: str
    namespace: str = ""

    @abstractmethod
    def upsert(self, records: Sequence[Record], namespace: str | None = None) -> int: ...

    @abstractmethod
    def query(
        self, vector: np.ndarray, top_k: int = 10, filter: Node | None = None, namespace: str | None = None
    ) -> list[Match]: ...

    @abstractmethod
    def fetch(self, ids: Sequence[str], namespace: str | None = None) -> dict[str, Record]: ...

    @abstractmethod
    def delete(self, ids: Sequence[str], namespace: str | None = None) -> int: ...

    @abstractmethod
    def delete_document(self, doc_id: str, namespace: str | None = None) -> int: ...

    @abstractmethod
    def delete_namespace(self, namespace: str | None = None) -> None: ...

    @abstractmethod
    def document_chunks(self, doc_id: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """Metadata of every record whose ``doc_id`` metadata is ``doc_id``, by record id."""

    @abstractmethod
    def document_ids(self, namespace: str | None = None) -> set[str]: ...

    @abstractmethod
    def stats(self) -> StoreStats: ...

    def replace(self, upserts: Sequence[Record], delete_ids: Iterable[str], namespace: str | None = None) -> None:
        """Write ``upserts`` and delete ``delete_ids`` together: atomically where the backend can
        (the embedded store), upserts first otherwise (Pinecone), so a reader never sees a
        document with none of its chunks."""
        if upserts:
            self.upsert(upserts, namespace)
        doomed = list(delete_ids)
        if doomed:
            self.delete(doomed, namespace)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ns(self, namespace: str | None) -> str:
        return self.namespace if namespace is None else namespace


def open_store(uri: str | None = None, **overrides: str) -> VectorStore:
    """The store a URI names (``RAGRAPH_STORE``, then ``local://.ragraph/store`` when None)."""
    uri = uri or os.environ.get(STORE_ENV) or DEFAULT_URI
    parts = urlsplit(uri)
    options = {**dict(parse_qsl(parts.query)), **overrides}
    if parts.scheme == "local":
        from .local import LocalStore

        return LocalStore(parts.netloc + parts.path, uri=uri, **options)
    if parts.scheme == "pinecone":
        from .pinecone_store import PineconeStore

        if not parts.netloc:
            raise InvalidArgument(f"store URI {uri!r}: pinecone:// wants an index name, e.g. pinecone://docs")
        return PineconeStore(parts.netloc, uri=uri, **options)
    if parts.scheme in ("postgres", "postgresql"):
        from .postgres_store import PostgresStore

        conninfo = urlunsplit(parts._replace(query="", fragment=""))
        return PostgresStore(conninfo, uri=urlunsplit(parts._replace(fragment="")), **options)
    raise InvalidArgument(f"store URI {uri!r}: scheme must be local://, pinecone:// or postgres://")
