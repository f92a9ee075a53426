"""Idempotent ingestion: files -> chunks -> vectors (through the encoder service) -> store.

Every chunk record is ``{doc_id}#{n}`` with metadata ``doc_id``, ``chunk``, ``n_chunks``,
``text``, ``kind``, ``tokens``, ``hash`` (the chunk's text and chunking settings) and
``doc_hash`` (the whole file's). Re-ingesting a file whose ``doc_hash`` is unchanged writes
nothing; a changed file replaces exactly its own chunks in one store write (atomic on the
embedded store), re-embedding only chunks whose ``hash`` changed; ``prune`` deletes documents
whose files are gone.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from ragraph_client.errors import InvalidArgument

from .chunking import Chunk, Chunker
from .documents import Skipped, SourceFile, find_files, read_text
from .store import Record, VectorStore


class Embedder(Protocol):
    batch_size: int

    def embed(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray: ...


def chunk_id(doc_id: str, n: int) -> str:
    return f"{doc_id}#{n}"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:32]


@dataclass
class IngestSummary:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    chunks_written: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped"] = [{"path": s.path, "reason": s.reason} for s in self.skipped]
        return out


@dataclass
class _Plan:
    doc_id: str
    new: bool
    chunks: list[Chunk]
    metadata: list[dict[str, Any]]
    vectors: dict[int, np.ndarray]  # chunk index -> vector (reused or embedded)
    stale: list[str]

    @property
    def missing(self) -> list[int]:
        return [c.index for c in self.chunks if c.index not in self.vectors]


class Ingestor:
    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        chunker: Chunker,
        namespace: str | None = None,
        flush_chunks: int = 256,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunker = chunker
        self.namespace = store.ns(namespace)
        self.flush_chunks = flush_chunks

    def plan(self, source: SourceFile, text: str) -> _Plan | None:
        """What ingesting ``text`` as ``source.doc_id`` changes; None when nothing does."""
        settings = self.chunker.describe()
        doc_hash = _digest(settings, source.kind, text)
        existing = self.store.document_chunks(source.doc_id, self.namespace)
        if existing and all(
            m.get("doc_hash") == doc_hash and m.get("n_chunks") == len(existing) for m in existing.values()
        ):
            return None
        chunks = self.chunker.split(text, source.kind)
        metadata = []
        for chunk in chunks:
            metadata.append(
                {
                    "doc_id": source.doc_id,
                    "chunk": chunk.index,
                    "n_chunks": len(chunks),
                    "text": chunk.text,
                    "kind": source.kind,
                    "tokens": chunk.tokens,
                    "hash": _digest(settings, chunk.text),
                    "doc_hash": doc_hash,
                }
            )
        ids = {chunk_id(source.doc_id, c.index) for c in chunks}
        same = [
            c.index
            for c, m in zip(chunks, metadata, strict=True)
            if existing.get(chunk_id(source.doc_id, c.index), {}).get("hash") == m["hash"]
        ]
        vectors: dict[int, np.ndarray] = {}
        if same:
            fetched = self.store.fetch([chunk_id(source.doc_id, i) for i in same], self.namespace)
            for i in same:
                record = fetched.get(chunk_id(source.doc_id, i))
                if record is not None:
                    vectors[i] = record.vector
        stale = sorted(set(existing) - ids)
        return _Plan(source.doc_id, not existing, chunks, metadata, vectors, stale)

    def _commit(self, plan: _Plan, summary: IngestSummary) -> None:
        records = [
            Record(chunk_id(plan.doc_id, c.index), plan.vectors[c.index], m)
            for c, m in zip(plan.chunks, plan.metadata, strict=True)
        ]
        self.store.replace(records, plan.stale, self.namespace)
        summary.chunks_written += len(records)
        summary.chunks_deleted += len(plan.stale)
        if plan.new:
            summary.added += 1
        else:
            summary.updated += 1

    def _flush(self, pending: list[_Plan], summary: IngestSummary, on_batch: Callable[[int], None] | None) -> None:
        owners = [(plan, i) for plan in pending for i in plan.missing]
        if owners:
            texts = [plan.chunks[i].text for plan, i in owners]
            vectors = self.embedder.embed(texts, on_batch)
            for (plan, i), vector in zip(owners, vectors, strict=True):
                plan.vectors[i] = vector
            summary.chunks_embedded += len(owners)
        for plan in pending:
            self._commit(plan, summary)
        pending.clear()

    def run(
        self,
        paths: Sequence[str],
        root: str | None = None,
        prune: bool = False,
        progress: Callable[[str, int], Callable[[int], None]] | None = None,
    ) -> IngestSummary:
        """Ingest ``paths``. ``progress(label, total)`` (optional) returns a callback taking
        increments: called once for scanning files, once for embedding chunks."""
        started = time.perf_counter()
        summary = IngestSummary()
        found = list(find_files(paths, root))
        missing_roots = [s for s in found if isinstance(s, Skipped) and s.reason == "no such file or folder"]
        if prune and missing_roots:
            raise InvalidArgument(
                f"--prune refused: {missing_roots[0].path} does not exist (it would delete its documents)"
            )
        seen: set[str] = set()
        plans: list[_Plan] = []
        tick = progress("scan", len(found)) if progress else None
        for item in found:
            if tick:
                tick(1)
            if isinstance(item, Skipped):
                summary.skipped.append(item)
                continue
            text = read_text(item.path)
            if text is None:
                summary.skipped.append(Skipped(str(item.path), "binary file"))
                continue
            if not text.strip():
                if self.store.delete_document(item.doc_id, self.namespace):
                    summary.updated += 1  # emptied: its old chunks go, nothing replaces them
                else:
                    summary.skipped.append(Skipped(str(item.path), "empty file"))
                continue
            seen.add(item.doc_id)
            plan = self.plan(item, text)
            if plan is None:
                summary.unchanged += 1
            else:
                plans.append(plan)
        total = sum(len(p.missing) for p in plans)
        on_batch = progress("embed", total) if progress else None
        pending: list[_Plan] = []
        queued = 0
        for plan in plans:
            pending.append(plan)
            queued += len(plan.missing)
            if queued >= self.flush_chunks:
                self._flush(pending, summary, on_batch)
                queued = 0
        self._flush(pending, summary, on_batch)
        if prune:
            for doc_id in sorted(self.store.document_ids(self.namespace) - seen):
                summary.chunks_deleted += self.store.delete_document(doc_id, self.namespace)
                summary.deleted += 1
        summary.seconds = time.perf_counter() - started
        return summary
