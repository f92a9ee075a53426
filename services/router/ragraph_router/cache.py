"""The semantic cache behind a graph's CACHE node (docs/graph.md, "Semantic cache").

An answer is stored as one record in a vector store: the question's embedding as the vector, the
answer, its sources and label, the key it was made under and its expiry in the metadata. A lookup
is a store query for the nearest record with the same key that has not expired; it is a hit when
the cosine similarity reaches the node's threshold.

The key is a hash of everything besides the question that changes the answer: the graph (every
node but the cache itself, endpoints included, plus the node's ``version``), the request's
namespace, the request parameters the graph forwards to its nodes (``max_tokens``,
``temperature``, ...) and the retrieval overrides ``top_k`` and ``filter``. Tenants are kept
apart twice: by the key, and by the store namespace (``<namespace>:<request namespace>``).

Everything here is synchronous (store calls); the executor runs it in a thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from ragraph_client.errors import Unavailable
from ragraph_retrieval import filters
from ragraph_retrieval.store import MAX_METADATA_BYTES, Match, Record, VectorStore, metadata_bytes

from .graph import CacheParameters, Graph, Node
from .prompt import Source

log = logging.getLogger("ragraph.router")

# Request parameters whose value is a number however the caller spelled it (V2 parameters may
# carry 0.7 as a double or as the string "0.7"; MLServer sends floats as strings).
_NUMERIC = {"max_tokens", "temperature", "top_p", "top_k_tokens", "seed"}
PURGE_BATCH = 256  # expired rows deleted per sweep
CANDIDATES = 32  # nearest rows a lookup reads before it falls back to a filtered query
PURGE_EVERY_S = 60.0  # least time between two sweeps of one namespace

Result = Literal["hit", "miss", "expired"]


@dataclass(frozen=True)
class Entry:
    """What a hit serves: the answer and what came with it."""

    question: str
    answer: str
    sources: list[Source]
    label: str = ""
    finish_reason: str = ""

    def metadata(self, key: str, expires_at: float, created_at: float) -> dict[str, Any]:
        sources = [{**s.as_json(), "score": float(s.score)} for s in self.sources]
        return {
            "key": key,
            "expires_at": expires_at,
            "created_at": created_at,
            "question": self.question,
            "answer": self.answer,
            "sources": json.dumps(sources, separators=(",", ":")),
            "label": self.label,
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Entry:
        sources = [
            Source(int(s["n"]), str(s["doc_id"]), int(s["chunk"]), float(s["score"]), "")
            for s in json.loads(str(metadata.get("sources") or "[]"))
        ]
        return cls(
            question=str(metadata.get("question", "")),
            answer=str(metadata.get("answer", "")),
            sources=sources,
            label=str(metadata.get("label", "")),
            finish_reason=str(metadata.get("finish_reason", "")),
        )


@dataclass(frozen=True)
class Lookup:
    result: Result
    score: float | None = None  # similarity of the best same-key record, when there is one
    entry: Entry | None = None  # set on a hit


@dataclass(frozen=True)
class Slot:
    """Where a missed question's answer goes once the graph has made it."""

    key: str
    namespace: str
    vector: np.ndarray


def _canon(name: str, value: Any) -> Any:
    """A parameter value in one spelling: numbers (or numeric strings, for numeric parameters)
    as floats, lists item by item, anything else as a string or bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [_canon(name, v) for v in value]
    if isinstance(value, str) and name in _NUMERIC:
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return str(value)


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def graph_identity(graph: Graph, node: Node) -> str:
    """A hash of everything in the graph that shapes an answer: every node but the CACHE node
    (its threshold and TTL decide what is served, not what is stored), plus its ``version``."""
    params = CacheParameters.model_validate(node.parameters)
    nodes = [n.model_dump(mode="json") for n in graph.nodes if n.type != "CACHE"]
    return _digest({"graph": graph.name, "nodes": nodes, "version": params.version})


class SemanticCache:
    """The cache of one CACHE node, over the store its ``endpoint.store`` names."""

    def __init__(self, graph: Graph, node: Node, store: VectorStore) -> None:
        self.node = node
        self.store = store
        self.params = CacheParameters.model_validate(node.parameters)
        self.identity = graph_identity(graph, node)
        self.forwarded = sorted({name for n in graph.nodes for name in n.forward})
        self._purged: dict[str, float] = {}  # store namespace -> when it was last swept
        self._lock = threading.Lock()

    @classmethod
    def for_graph(cls, graph: Graph, stores: Mapping[str, VectorStore]) -> SemanticCache | None:
        node = next((n for n in graph.nodes if n.type == "CACHE"), None)
        if node is None:
            return None
        assert node.endpoint and node.endpoint.store
        return cls(graph, node, stores[node.endpoint.store])

    # --- keys --------------------------------------------------------------------------------

    def key(
        self,
        namespace: str | None,
        params: Mapping[str, Any],
        top_k: int | None = None,
        filter: filters.Node | None = None,
    ) -> str:
        """The key an answer is stored and looked up under. ``params`` are the request's
        parameters; only those some node forwards count (the others reach no model)."""
        return _digest(
            {
                "graph": self.identity,
                "namespace": namespace,
                "params": {k: _canon(k, params[k]) for k in self.forwarded if k in params},
                "top_k": top_k,
                "filter": filters.to_dict(filter) if filter is not None else None,
            }
        )

    def namespace(self, request_namespace: str | None) -> str:
        """The store namespace answers for this request's namespace live in."""
        base = self.params.namespace
        return f"{base}:{request_namespace}" if request_namespace else base

    @staticmethod
    def record_id(key: str, question: str) -> str:
        """One record per (key, question): asking again after expiry overwrites it."""
        return _digest([key, question.strip()])[:32]

    # --- lookups and writes ------------------------------------------------------------------

    def lookup(self, vector: np.ndarray, key: str, namespace: str, now: float | None = None) -> Lookup:
        """The best unexpired answer under ``key`` when it is similar enough; otherwise whether
        a similar one had expired (it is deleted then). Store errors come back as UNAVAILABLE.

        The nearest CANDIDATES rows are read unfiltered (one vector search; a filtered query on
        the embedded store scans every row's metadata) and the key and expiry are checked here.
        That decides exactly as the filtered query would unless even the last of them reaches
        the threshold: then rows past it could too, and the store filters on key and expiry."""
        now = time.time() if now is None else now
        threshold = self.params.threshold
        try:
            nearest = self.store.query(vector, CANDIDATES, None, namespace)
            if len(nearest) == CANDIDATES and nearest[-1].score >= threshold:
                fresh = self.store.query(vector, 1, filters.parse({"key": key, "expires_at": {"$gt": now}}), namespace)
                stale = self.store.query(vector, 1, filters.parse({"key": key, "expires_at": {"$lte": now}}), namespace)
            else:
                mine = [m for m in nearest if m.metadata.get("key") == key]
                fresh = [m for m in mine if _expiry(m) > now]
                stale = [m for m in mine if _expiry(m) <= now]
            if fresh and fresh[0].score >= threshold:
                return Lookup("hit", fresh[0].score, Entry.from_metadata(fresh[0].metadata))
            if stale and stale[0].score >= threshold:
                self.store.delete([stale[0].id], namespace)
                return Lookup("expired", stale[0].score)
        except Unavailable:
            raise
        except Exception as exc:  # sqlite3 errors, a dimension mismatch, a Pinecone client's own
            raise Unavailable(f"cache store {self.store.uri}: {type(exc).__name__}: {exc}") from exc
        return Lookup("miss", fresh[0].score if fresh else None)

    def put(self, vector: np.ndarray, key: str, namespace: str, entry: Entry, now: float | None = None) -> bool:
        """Store ``entry`` under ``key`` for ``ttl_s`` seconds; False (and nothing stored) when it
        is too large for a record's metadata. Sweeps expired rows of the namespace now and then."""
        now = time.time() if now is None else now
        metadata = entry.metadata(key, now + self.params.ttl_s, now)
        if metadata_bytes(metadata) > MAX_METADATA_BYTES:
            log.debug("cache: answer not stored, %d bytes of metadata", metadata_bytes(metadata))
            return False
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        self.store.upsert([Record(self.record_id(key, entry.question), vector, metadata)], namespace)
        self.maybe_purge(vector, namespace, now)
        return True

    def save(self, slot: Slot, entry: Entry) -> None:
        """``put`` for the executor's background writes: a failure is logged, never raised."""
        try:
            self.put(slot.vector, slot.key, slot.namespace, entry)
        except Exception as exc:  # noqa: BLE001 - the answer was served; only the cache misses out
            log.warning("cache: answer not stored in %s: %s: %s", self.store.uri, type(exc).__name__, exc)

    def maybe_purge(self, vector: np.ndarray, namespace: str, now: float) -> int:
        with self._lock:
            if now - self._purged.get(namespace, -math.inf) < min(PURGE_EVERY_S, self.params.ttl_s):
                return 0
            self._purged[namespace] = now
        return self.purge(vector, namespace, now)

    def purge(self, vector: np.ndarray, namespace: str, now: float | None = None) -> int:
        """Delete up to PURGE_BATCH expired rows of ``namespace``, whatever their key. A filtered
        query returns rows that pass the filter however far they are from ``vector``."""
        now = time.time() if now is None else now
        expired = self.store.query(vector, PURGE_BATCH, filters.parse({"expires_at": {"$lte": now}}), namespace)
        if not expired:
            return 0
        return self.store.delete([m.id for m in expired], namespace)


def _expiry(match: Match) -> float:
    value = match.metadata.get("expires_at")
    return float(value) if isinstance(value, int | float) else -math.inf
