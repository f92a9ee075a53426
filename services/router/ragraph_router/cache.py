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

The store calls here are synchronous; the CACHE node runs them in a thread. Once a run that
missed has made its answer, :meth:`SemanticCache.store_answer` decides whether it is worth serving
again and writes it in the background, off the caller's path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from ragraph_client.errors import Unavailable
from ragraph_retrieval import filters
from ragraph_retrieval.store import MAX_METADATA_BYTES, Match, Record, VectorStore, metadata_bytes

from .cache_keys import canon, digest, graph_identity
from .graph import Graph
from .node_parts import CacheParameters
from .nodes import CacheNode, CombinerNode, ModelNode
from .prompt import Source

if TYPE_CHECKING:
    from .events import FinalEvent
    from .values import Values

log = logging.getLogger("ragraph.router")

PURGE_BATCH = 256  # expired rows deleted per sweep
CANDIDATES = 32  # nearest rows a lookup reads before it falls back to a filtered query
PURGE_EVERY_S = 60.0  # least time between two sweeps of one namespace
MAX_WRITES = 64  # answers being written at once; past that an answer is not stored

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


class SemanticCache:
    """The cache of one CACHE node, over the store its ``endpoint.store`` names."""

    def __init__(self, graph: Graph, node: CacheNode, store: VectorStore) -> None:
        self.node = node
        self.store = store
        self.params: CacheParameters = node.settings
        self.identity = graph_identity(graph, node)
        self.forwarded = sorted({name for n in graph.of(ModelNode) for name in n.forward})
        self.refusals = {n.name for n in graph.of(CombinerNode) if n.combine == "refusal"}
        self._purged: dict[str, float] = {}  # store namespace -> when it was last swept
        self._lock = threading.Lock()
        self._writes: set[asyncio.Task[None]] = set()  # answers being written, off the callers' path

    @classmethod
    def for_graph(cls, graph: Graph, stores: Mapping[str, VectorStore]) -> SemanticCache | None:
        node = graph.cache
        return None if node is None else cls(graph, node, stores[node.store])

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
        return digest(
            {
                "graph": self.identity,
                "namespace": namespace,
                "params": {k: canon(k, params[k]) for k in self.forwarded if k in params},
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
        return digest([key, question.strip()])[:32]

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
        """``put`` for the background writes: a failure is logged, never raised."""
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

    # --- the answer a missed run made --------------------------------------------------------

    def store_answer(self, values: Values, question: str, final: FinalEvent, request_id: str) -> None:
        """After a miss, store the answer when it is one worth serving again; the write runs in a
        thread and the final event goes out without waiting for it."""
        slot = values.slot(self.node.name)
        reason = self._finish_reason(values, final)
        if not isinstance(slot, Slot) or not self._cacheable(values, final, reason):
            return
        if len(self._writes) >= MAX_WRITES:  # a slow store: shed writes, not the thread pool
            log.warning("cache: %d writes under way, answer to request %s not stored", len(self._writes), request_id)
            return
        entry = Entry(question, final.answer, final.sources, final.label, reason)
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.save, slot, entry))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _cacheable(self, values: Values, final: FinalEvent, reason: str) -> bool:
        """A normal answer: finished (stop or length), no node failed, skipped or defaulted, not
        stopped by the output guard, not a refusal, not empty."""
        if values.flagged or "output_guard" in final.parameters or not final.answer.strip():
            return False
        if any(name in self.refusals for name in values.path):
            return False
        return reason in ("stop", "length")

    @staticmethod
    def _finish_reason(values: Values, final: FinalEvent) -> str:
        """The streaming node's finish_reason, else the last one a node on the path reported."""
        if final.parameters.get("finish_reason"):
            return str(final.parameters["finish_reason"])
        for name in reversed(values.path):
            reason = values.parameters(name).get("finish_reason")
            if reason:
                return str(reason)
        return ""

    async def settle(self) -> None:
        """Wait for the writes still under way (tests; before closing the stores)."""
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    def report(self, values: Values, params: dict[str, Any]) -> None:
        """The final parameters' ``cached``, and ``cache_score``: the hit's similarity, or on a
        miss the best one under the same key when there was one. A hit reports the stored
        answer's finish_reason."""
        name = self.node.name
        params["cached"] = values.hit(name)
        score = values.score(name)
        if score is not None:
            params["cache_score"] = round(float(score), 4)
        if params["cached"]:
            params["finish_reason"] = str(values.stored_finish_reason(name) or params["finish_reason"])


def _expiry(match: Match) -> float:
    value = match.metadata.get("expires_at")
    return float(value) if isinstance(value, int | float) else -math.inf
