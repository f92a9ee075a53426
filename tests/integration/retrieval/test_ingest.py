"""``ragraph ingest`` / ``search`` against the real encoder service and the embedded store:
idempotence, single-file edits, prune, skipped files, and kill -9 in the middle of an ingest."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ragraph_retrieval.chunking import Chunker
from ragraph_retrieval.embedder import EncoderEmbedder
from ragraph_retrieval.ingest import Ingestor
from ragraph_retrieval.local import LocalStore
from ragraph_retrieval.tokens import encoder_counter

from tests.fixtures.servers import REPO, Service

TOPICS = ["river", "engine", "garden", "ledger", "compiler", "harbour", "violin", "glacier", "orchard", "satellite"]


def _write_corpus(root: Path, docs: int, paragraphs: int = 6) -> None:
    for d in range(docs):
        topic = TOPICS[d % len(TOPICS)]
        folder = root / ("notes" if d % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        body = "\n\n".join(
            f"## Part {p}\n\n"
            + " ".join(f"The {topic} number {d} has property {p}.{s} worth noting." for s in range(9))
            for p in range(paragraphs + d % 4)
        )
        (folder / f"doc{d:03d}.md").write_text(f"# {topic.title()} {d}\n\n{body}\n")


@pytest.fixture()
def ingest_env(tmp_path: Path, encoder_service: Service) -> Iterator[tuple[Ingestor, LocalStore, Path]]:
    corpus = tmp_path / "corpus"
    _write_corpus(corpus, 8)
    (corpus / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    store = LocalStore(str(tmp_path / "store"))
    counter, limit = encoder_counter()
    with EncoderEmbedder(encoder_service.grpc_url, batch_size=32) as embedder:
        yield Ingestor(store, embedder, Chunker(counter, limit, 96, 16)), store, corpus
    store.close()


def _snapshot(store: LocalStore) -> dict[str, tuple[bytes, str]]:
    db = sqlite3.connect(store.path / "store.sqlite3")
    try:
        return {rid: (vec, meta) for rid, vec, meta in db.execute("SELECT id, vector, metadata FROM records")}
    finally:
        db.close()


def _changes(store: LocalStore) -> int:
    return int(store._db.execute("SELECT total_changes()").fetchone()[0])


def test_ingest_is_idempotent_and_edits_touch_only_their_document(
    ingest_env: tuple[Ingestor, LocalStore, Path],
) -> None:
    ingestor, store, corpus = ingest_env
    first = ingestor.run([str(corpus)])
    assert (first.added, first.updated, first.unchanged, first.deleted) == (8, 0, 0, 0)
    assert [s.reason for s in first.skipped] == ["binary file"]
    assert first.chunks_written == first.chunks_embedded == store.stats().total > 8
    assert store.document_ids() == {f"doc{d:03d}.md" if d % 3 else f"notes/doc{d:03d}.md" for d in range(8)}

    # every chunk: id {doc_id}#{n}, complete numbering, a content hash, text within the limit
    for doc_id in store.document_ids():
        chunks = store.document_chunks(doc_id)
        assert sorted(chunks) == sorted(f"{doc_id}#{n}" for n in range(len(chunks)))
        assert all(m["n_chunks"] == len(chunks) and len(m["hash"]) == 32 and m["tokens"] <= 96 for m in chunks.values())

    before, writes = _snapshot(store), _changes(store)
    again = ingestor.run([str(corpus)])
    assert (again.unchanged, again.added, again.updated, again.chunks_written, again.chunks_embedded) == (8, 0, 0, 0, 0)
    assert _changes(store) == writes  # not a single row written
    assert _snapshot(store) == before

    # edit one paragraph of one document: only that document's records change
    target = corpus / "doc001.md"
    text = target.read_text()
    target.write_text(text.replace("The engine number 1 has property 3.4", "The engine number 1 was REWRITTEN 3.4"))
    edited = ingestor.run([str(corpus)])
    assert (edited.updated, edited.unchanged, edited.added) == (1, 7, 0)
    after = _snapshot(store)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and all(k.startswith("doc001.md#") for k in changed)
    # vectors are recomputed only where the chunk text changed (overlap: one or two chunks)
    assert 1 <= edited.chunks_embedded <= 2
    texts_changed = {k for k in changed if json.loads(before[k][1])["text"] != json.loads(after[k][1])["text"]}
    assert {k for k in changed if before[k][0] != after[k][0]} == texts_changed

    # shrink a document: its stale chunks go, in the same write
    target.write_text(text.split("## Part 2")[0])
    shrunk = ingestor.run([str(corpus)])
    assert shrunk.updated == 1 and shrunk.chunks_deleted > 0
    left = store.document_chunks("doc001.md")
    assert sorted(left) == [f"doc001.md#{n}" for n in range(len(left))]

    # query finds the edited text through the same encoder
    vector = ingestor.embedder.embed(["Which engine was rewritten?"])[0]
    assert store.query(vector, 1)[0].metadata["doc_id"] == "doc001.md"


def test_prune_removes_documents_whose_files_are_gone(ingest_env: tuple[Ingestor, LocalStore, Path]) -> None:
    ingestor, store, corpus = ingest_env
    ingestor.run([str(corpus)])
    (corpus / "doc002.md").unlink()
    (corpus / "notes" / "doc003.md").unlink()
    kept = ingestor.run([str(corpus)])  # without --prune nothing is deleted
    assert kept.deleted == 0 and "doc002.md" in store.document_ids()
    pruned = ingestor.run([str(corpus)], prune=True)
    assert pruned.deleted == 2 and pruned.unchanged == 6
    assert store.document_ids() == {f"doc{d:03d}.md" if d % 3 else f"notes/doc{d:03d}.md" for d in (0, 1, 4, 5, 6, 7)}
    with pytest.raises(Exception, match="--prune refused"):
        ingestor.run([str(corpus), str(corpus / "nope")], prune=True)
    assert len(store.document_ids()) == 6


def _ragraph(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "ragraph_cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def test_cli_ingest_and_search(tmp_path: Path, encoder_service: Service) -> None:
    corpus = tmp_path / "corpus"
    _write_corpus(corpus, 4)
    uri = f"local://{tmp_path}/store"
    common = ["--store", uri, "--encoder-url", encoder_service.grpc_url]
    shown = _ragraph("ingest", str(corpus), *common, "--namespace", "kb")
    assert shown.returncode == 0, shown.stderr
    assert "4 added, 0 updated, 0 unchanged, 0 deleted, 0 skipped" in shown.stdout
    assert "chunk/s" in shown.stderr  # the progress bar, with its rate
    again = _ragraph("ingest", str(corpus), *common, "--namespace", "kb", "--json")
    summary = json.loads(again.stdout)
    assert (summary["unchanged"], summary["chunks_written"], summary["namespace"]) == (4, 0, "kb")

    found = _ragraph("search", "the ledger number 3", *common, "--namespace", "kb", "--top-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert len(results) == 3 and results[0]["doc_id"] == "notes/doc003.md"
    assert [r["rank"] for r in results] == [1, 2, 3] and results[0]["score"] >= results[1]["score"]
    filtered = _ragraph(
        "search",
        "the ledger",
        *common,
        "--namespace",
        "kb",
        "--json",
        "--filter",
        '{"doc_id": {"$ne": "notes/doc003.md"}}',
    )
    assert all(r["doc_id"] != "notes/doc003.md" for r in json.loads(filtered.stdout)["results"])
    text = _ragraph("search", "garden", *common, "--namespace", "kb", "--top-k", "2")
    assert text.returncode == 0 and text.stdout.startswith(" 1. ") and "#" in text.stdout

    bad = _ragraph("search", "x", *common, "--filter", '{"year": {"$gt": "2001"}}')
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "$gt" in bad.stderr
    empty = _ragraph("search", "x", *common, "--namespace", "nothing-here")
    assert empty.returncode == 0 and empty.stdout.strip() == "no results"


def _count(path: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_kill_9_mid_ingest_leaves_a_clean_store(tmp_path: Path, encoder_service: Service) -> None:
    corpus = tmp_path / "corpus"
    _write_corpus(corpus, 30, paragraphs=8)
    # small commit groups: many write bursts, so a kill lands between documents as well as mid-embedding
    common = ["--encoder-url", encoder_service.grpc_url, "--no-progress", "--batch-size", "16", "--commit-every", "32"]
    clean = _ragraph("ingest", str(corpus), "--store", f"local://{tmp_path}/clean", *common, "--json")
    assert clean.returncode == 0, clean.stderr
    clean_total = LocalStore(str(tmp_path / "clean")).stats().total

    crashed = tmp_path / "crashed"
    db_path = crashed / "store.sqlite3"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for kill_at in (1, clean_total // 2):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ragraph_cli.main", "ingest", str(corpus), "--store", f"local://{crashed}", *common],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        target = max(kill_at, _count(db_path) + 1)  # always at least one new write before the kill
        while _count(db_path) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the ingest finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

        store = LocalStore(str(crashed))
        assert store.integrity_check() == "ok"
        assert 0 < store.stats().total < clean_total
        for doc_id in store.document_ids():  # no half-written document
            chunks = store.document_chunks(doc_id)
            assert {m["n_chunks"] for m in chunks.values()} == {len(chunks)}
            assert sorted(chunks) == sorted(f"{doc_id}#{n}" for n in range(len(chunks)))
        store.close()

    resumed = _ragraph("ingest", str(corpus), "--store", f"local://{crashed}", *common, "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["unchanged"] > 0 and summary["added"] > 0  # picked up where it died
    store = LocalStore(str(crashed))
    assert store.stats().total == clean_total
    clean_store = LocalStore(str(tmp_path / "clean"))
    assert store.document_ids() == clean_store.document_ids()
    probe = np.ones(384, dtype=np.float32)
    assert [m.id for m in store.query(probe, 5)] == [m.id for m in clean_store.query(probe, 5)]
