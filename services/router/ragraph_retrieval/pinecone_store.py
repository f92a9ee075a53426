"""Pinecone behind the :class:`~ragraph_retrieval.store.VectorStore` interface, on the current
``pinecone`` SDK (``Pinecone(...).index(...)``, not the old ``pinecone-client`` API).

``pinecone://INDEX[?namespace=NS][&host=URL][&controller=URL]``: the API key comes from
``PINECONE_API_KEY``; ``host`` is the index's data-plane URL (skips the describe call, e.g.
Pinecone Local's ``http://localhost:5081``); ``controller`` is the control-plane URL (Pinecone
Local's ``http://localhost:5080``; default Pinecone's, or ``PINECONE_CONTROLLER_HOST``).

Limits are enforced before anything is sent: records are checked (40 KB of metadata each, the
index's dimension once known) and upserts are split into requests of at most 1000 records and
2 MB of JSON. The SDK retries 408/429/5xx answers itself; connection failures and answers that
stay 5xx are retried here a few times more, then surface as UNAVAILABLE. The index host is
looked up once per (controller, index) and process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from ragraph_client.errors import InvalidArgument, NotFound, RagraphError, Unauthenticated, Unavailable

from . import filters
from .store import Match, Record, StoreStats, VectorStore, as_vector, check_query, check_record

log = logging.getLogger("ragraph.pinecone")
T = TypeVar("T")

MAX_BATCH_RECORDS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
REQUEST_HEADROOM = 64 * 1024  # the JSON envelope and the SDK's own encoding of floats
FETCH_BATCH = 100  # ids travel in the query string
DELETE_BATCH = 1000
_HOSTS: dict[tuple[str, str], str] = {}
_HOSTS_LOCK = threading.Lock()


def _wire_values(vector: np.ndarray) -> list[float]:
    """float32 values at float32 precision: half the JSON of Python's full float repr."""
    return [float(f"{x:.8g}") for x in vector.tolist()]


def _record_bytes(record_id: str, values: list[float], metadata: dict[str, Any]) -> int:
    body = {"id": record_id, "values": values, "metadata": metadata}
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")) + 1


def batches(records: Sequence[tuple[str, list[float], dict[str, Any]]]) -> Iterator[list[Any]]:
    """Split records into upsert requests within Pinecone's record-count and size limits."""
    batch: list[Any] = []
    size = 0
    limit = MAX_REQUEST_BYTES - REQUEST_HEADROOM
    for rid, values, metadata in records:
        n = _record_bytes(rid, values, metadata)
        if n > limit:
            raise InvalidArgument(f"record {rid!r}: {n} bytes encoded, more than one upsert request may carry")
        if batch and (len(batch) >= MAX_BATCH_RECORDS or size + n > limit):
            yield batch
            batch, size = [], 0
        batch.append({"id": rid, "values": values, "metadata": metadata})
        size += n
    if batch:
        yield batch


def _translate(exc: Exception, what: str) -> RagraphError:
    """The one mapping from the SDK's exceptions to ragraph's gRPC-coded errors."""
    import pinecone

    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    text = f"pinecone {what}: {message}"
    if isinstance(exc, pinecone.UnauthorizedError | pinecone.ForbiddenError) or status in (401, 403):
        return Unauthenticated(text)
    if isinstance(exc, pinecone.NotFoundError) or status == 404:
        return NotFound(text)
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return InvalidArgument(text)
    return Unavailable(text)


class PineconeStore(VectorStore):
    def __init__(
        self,
        index: str,
        *,
        uri: str | None = None,
        namespace: str = "",
        host: str | None = None,
        controller: str | None = None,
        api_key: str | None = None,
        retries: str | int = 2,
        timeout: str | float = 30.0,
        **unknown: str,
    ) -> None:
        if unknown:
            raise InvalidArgument(f"store URI: unknown option(s) {sorted(unknown)} for pinecone://")
        self.index_name = index
        self.uri = uri or f"pinecone://{index}"
        self.namespace = namespace
        self.api_key = api_key or os.environ.get("PINECONE_API_KEY", "")
        self.controller = controller or os.environ.get("PINECONE_CONTROLLER_HOST") or ""
        self.host = host
        self.retries = int(retries)
        self.timeout = float(timeout)
        self.dimension: int | None = None
        self._client: Any = None
        self._index: Any = None
        self._lock = threading.Lock()

    # --- connection --------------------------------------------------------------------------

    def _resolve(self) -> Any:
        """The SDK's Index, created on first use (so a bad record fails before any request)."""
        with self._lock:
            if self._index is not None:
                return self._index
            if not self.api_key:  # checked at first use: a router starts without its secrets
                raise Unauthenticated(f"store {self.uri}: PINECONE_API_KEY is not set")
            from pinecone import Pinecone

            kwargs: dict[str, Any] = {"api_key": self.api_key, "timeout": self.timeout}
            if self.controller:
                kwargs["host"] = self.controller
            self._client = Pinecone(**kwargs)
            key = (self.controller, self.index_name)
            host = self.host
            if not host:
                with _HOSTS_LOCK:
                    host = _HOSTS.get(key)
                if not host:
                    described = self._retry("describe index", lambda: self._client.indexes.describe(self.index_name))
                    host = str(described.host)
                    if getattr(described, "dimension", None):
                        self.dimension = int(described.dimension)
                    with _HOSTS_LOCK:
                        _HOSTS[key] = host
            self._index = self._client.index(host=host)
            return self._index

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - translated below, in one place
                error = _translate(exc, what)
                if not isinstance(error, Unavailable) or attempt == self.retries:
                    raise error from exc
                delay = 0.2 * 2**attempt
                log.warning("%s; retry %d/%d in %.1fs", error.message, attempt + 1, self.retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        index = self._resolve()
        return self._retry(what, lambda: getattr(index, method)(**kwargs))

    # --- writes ------------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record], namespace: str | None = None) -> int:
        prepared = []
        for record in records:
            vector = as_vector(record.vector)
            check_record(Record(record.id, vector, record.metadata), self.dimension or vector.shape[0])
            if self.dimension is None:
                self.dimension = vector.shape[0]
            prepared.append((record.id, _wire_values(vector), record.metadata))
        requests = list(batches(prepared))  # every limit checked before the first request
        written = 0
        for batch in requests:
            result = self._call("upsert", "upsert", vectors=batch, namespace=self.ns(namespace))
            written += int(getattr(result, "upserted_count", len(batch)) or 0)
        return written

    def delete(self, ids: Sequence[str], namespace: str | None = None) -> int:
        ids = list(ids)
        for start in range(0, len(ids), DELETE_BATCH):
            self._delete_ids(ids[start : start + DELETE_BATCH], self.ns(namespace))
        return len(ids)

    def _delete_ids(self, ids: list[str], namespace: str) -> None:
        try:
            self._call("delete", "delete", ids=ids, namespace=namespace)
        except NotFound:
            pass  # an unknown namespace holds none of these ids

    def delete_document(self, doc_id: str, namespace: str | None = None) -> int:
        ids = self._document_ids(doc_id, self.ns(namespace))
        return self.delete(ids, namespace)

    def delete_namespace(self, namespace: str | None = None) -> None:
        try:
            self._call("delete namespace", "delete", delete_all=True, namespace=self.ns(namespace))
        except NotFound:
            pass

    # --- reads -------------------------------------------------------------------------------

    def query(
        self,
        vector: np.ndarray,
        top_k: int = 10,
        filter: filters.Node | None = None,
        namespace: str | None = None,
    ) -> list[Match]:
        q = check_query(vector, top_k, self.dimension)
        kwargs: dict[str, Any] = {
            "vector": _wire_values(q),
            "top_k": top_k,
            "namespace": self.ns(namespace),
            "include_metadata": True,
        }
        if filter is not None:
            kwargs["filter"] = filters.to_dict(filter)
        result = self._call("query", "query", **kwargs)
        return [Match(str(m.id), float(m.score), dict(m.metadata or {})) for m in result.matches]

    def fetch(self, ids: Sequence[str], namespace: str | None = None) -> dict[str, Record]:
        out: dict[str, Record] = {}
        ids = list(ids)
        for start in range(0, len(ids), FETCH_BATCH):
            part = ids[start : start + FETCH_BATCH]
            result = self._call("fetch", "fetch", ids=part, namespace=self.ns(namespace))
            for rid, vec in result.vectors.items():
                out[rid] = Record(rid, as_vector(vec.values), dict(vec.metadata or {}))
        return out

    def _list(self, prefix: str, namespace: str) -> list[str]:
        index = self._resolve()
        ids: list[str] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"namespace": namespace, "limit": 100}
            if prefix:
                kwargs["prefix"] = prefix
            if token:
                kwargs["pagination_token"] = token
            page = self._retry("list", functools.partial(index.list_paginated, **kwargs))
            ids.extend(str(item.id) for item in page.vectors)
            token = page.pagination.next if page.pagination else None
            if not token:
                return ids

    def _document_ids(self, doc_id: str, namespace: str) -> list[str]:
        """Record ids of a document: chunk ids are ``{doc_id}#{n}`` (listed by prefix)."""
        return [i for i in self._list(f"{doc_id}#", namespace) if i.rpartition("#")[0] == doc_id]

    def document_chunks(self, doc_id: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        ns = self.ns(namespace)
        ids = self._document_ids(doc_id, ns)
        found = self.fetch(ids, ns) if ids else {}
        return {rid: r.metadata for rid, r in found.items() if r.metadata.get("doc_id") == doc_id}

    def document_ids(self, namespace: str | None = None) -> set[str]:
        return {i.rpartition("#")[0] for i in self._list("", self.ns(namespace)) if "#" in i}

    def stats(self) -> StoreStats:
        result = self._call("stats", "describe_index_stats")
        dimension = getattr(result, "dimension", None)
        namespaces = {str(name): int(s.vector_count) for name, s in (result.namespaces or {}).items()}
        return StoreStats(int(dimension) if dimension else self.dimension, namespaces)

    def close(self) -> None:
        for obj in (self._index, self._client):
            closer = getattr(obj, "close", None)
            if callable(closer):
                closer()
