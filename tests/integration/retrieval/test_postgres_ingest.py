"""``ragraph ingest`` and ``ragraph search`` end to end against ``postgres://`` (a real PostgreSQL
+ pgvector) with the real encoder service: re-ingesting writes no row, an edit rewrites only its
own document, prune, and the CLI with the password taken from ``PGPASSWORD``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from ragraph_retrieval.chunking import Chunker
from ragraph_retrieval.embedder import EncoderEmbedder
from ragraph_retrieval.ingest import Ingestor
from ragraph_retrieval.store import open_store
from ragraph_retrieval.tokens import encoder_counter

from tests.fixtures.corpus import CORPUS
from tests.fixtures.postgres_server import PostgresServer
from tests.fixtures.servers import REPO, Service


def _corpus(root: Path) -> Path:
    corpus = root / "corpus"
    shutil.copytree(CORPUS / "ops", corpus / "ops")
    shutil.copy(CORPUS / "espresso-machine-care.md", corpus)
    return corpus


def _row_versions(server: PostgresServer, table: str) -> dict[str, str]:
    with psycopg.connect(server.uri(), autocommit=True) as conn:
        return {rid: xmin for rid, xmin in conn.execute(f"SELECT id, xmin::text FROM {table}")}


def test_ingest_is_idempotent_and_edits_touch_only_their_document(
    tmp_path: Path, encoder_service: Service, postgres_server: PostgresServer
) -> None:
    corpus = _corpus(tmp_path)
    table = f"t_{uuid.uuid4().hex[:12]}"
    counter, limit = encoder_counter()
    with (
        open_store(postgres_server.uri(table, namespace="kb")) as store,
        EncoderEmbedder(encoder_service.grpc_url) as embedder,
    ):
        ingestor = Ingestor(store, embedder, Chunker(counter, limit, 128, 16))
        first = ingestor.run([str(corpus)])
        assert (first.added, first.updated, first.unchanged) == (5, 0, 0)
        assert first.chunks_written == store.stats().namespaces["kb"] > 5
        assert store.stats().dimension == 384
        before = _row_versions(postgres_server, table)

        again = ingestor.run([str(corpus)])
        assert (again.unchanged, again.chunks_written, again.chunks_embedded) == (5, 0, 0)
        assert _row_versions(postgres_server, table) == before  # not a single row written

        target = corpus / "ops" / "oncall.md"
        target.write_text(target.read_text() + "\n\nPagers are tested every Monday at 09:30 by the secondary.\n")
        edited = ingestor.run([str(corpus)])
        assert (edited.updated, edited.unchanged) == (1, 4)
        after = _row_versions(postgres_server, table)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert changed and all(k.startswith("ops/oncall.md#") for k in changed)

        (corpus / "espresso-machine-care.md").unlink()
        pruned = ingestor.run([str(corpus)], prune=True)
        assert pruned.deleted == 1 and "espresso-machine-care.md" not in store.document_ids()

        vector = embedder.embed(["When are the pagers tested?"])[0]
        assert store.query(vector, 1)[0].metadata["doc_id"] == "ops/oncall.md"


def _ragraph(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ragraph_cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env},
    )


def test_cli_ingest_and_search(tmp_path: Path, encoder_service: Service, postgres_server: PostgresServer) -> None:
    corpus = _corpus(tmp_path)
    uri = postgres_server.uri(f"t_{uuid.uuid4().hex[:12]}", password=False)
    env = {"PGPASSWORD": postgres_server.password}
    common = ["--store", uri, "--encoder-url", encoder_service.grpc_url, "--namespace", "kb"]
    shown = _ragraph("ingest", str(corpus), *common, "--no-progress", env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"ingested into {uri} (namespace 'kb')" in shown.stdout
    assert "5 added, 0 updated, 0 unchanged, 0 deleted, 0 skipped" in shown.stdout
    again = json.loads(_ragraph("ingest", str(corpus), *common, "--json", env=env).stdout)
    assert (again["unchanged"], again["chunks_written"], again["namespace"]) == (5, 0, "kb")

    found = _ragraph("search", "How do I restore a database from a backup?", *common, "--top-k", "3", "--json", env=env)
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert len(results) == 3 and results[0]["doc_id"] == "ops/backup-restore.md"
    assert [r["rank"] for r in results] == [1, 2, 3] and results[0]["score"] >= results[1]["score"] > 0
    spec = '{"doc_id": {"$nin": ["ops/backup-restore.md", "ops/oncall.md"]}}'
    filtered = _ragraph("search", "restore a backup", *common, "--json", "--filter", spec, env=env)
    docs = {r["doc_id"] for r in json.loads(filtered.stdout)["results"]}
    assert docs and not docs & {"ops/backup-restore.md", "ops/oncall.md"}

    bad = _ragraph("search", "x", *common, "--filter", '{"year": {"$gt": "2001"}}', env=env)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "$gt" in bad.stderr
    refused = _ragraph("search", "x", *common, env={"PGPASSWORD": "wrong"})
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    assert "password authentication failed" in refused.stderr
