"""``ragraph ingest`` and ``ragraph search``: the store from a laptop or a script."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

ENCODER_URL_ENV = "RAGRAPH_ENCODER_URL"


def add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        help="store URI: local://PATH (default $RAGRAPH_STORE or local://.ragraph/store), pinecone://INDEX or "
        "postgres://USER@HOST:PORT/DB (password from $PGPASSWORD)",
    )
    parser.add_argument("--namespace", help="store namespace (default: the URI's, else the default namespace)")
    parser.add_argument(
        "--encoder-url",
        default=os.environ.get(ENCODER_URL_ENV, "127.0.0.1:8101"),
        help=f"host:port of the encoder service (default ${ENCODER_URL_ENV} or 127.0.0.1:8101)",
    )
    parser.add_argument(
        "--token",
        help="the encoder's service token (default $RAGRAPH_SERVICE_TOKEN, else the one `ragraph up` generated, "
        "for a loopback --encoder-url)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _progress(enabled: bool) -> Callable[[str, int], Callable[[int], None]] | None:
    if not enabled:
        return None
    from tqdm import tqdm

    units = {"scan": ("scanning", "file"), "embed": ("embedding", "chunk")}

    def start(label: str, total: int) -> Callable[[int], None]:
        desc, unit = units.get(label, (label, "it"))
        bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)

        def tick(n: int) -> None:
            bar.update(n)
            if bar.n >= bar.total:
                bar.close()

        if total == 0:
            bar.close()
        return tick

    return start


def ingest(args: argparse.Namespace) -> int:
    from ragraph_retrieval.chunking import Chunker
    from ragraph_retrieval.embedder import EncoderEmbedder
    from ragraph_retrieval.ingest import Ingestor
    from ragraph_retrieval.store import open_store
    from ragraph_retrieval.tokens import encoder_counter

    from .tokens import resolve

    counter, limit = encoder_counter(args.encoder_model)
    chunker = Chunker(counter, limit, min(args.chunk_tokens, limit), args.overlap_tokens)
    show = not args.json and not args.no_progress
    token = resolve(args.token, args.encoder_url)
    embedder = EncoderEmbedder(args.encoder_url, batch_size=args.batch_size, priority="bulk", token=token)
    with open_store(args.store) as store, embedder:
        ingestor = Ingestor(store, embedder, chunker, args.namespace, flush_chunks=args.commit_every)
        summary = ingestor.run(args.paths, root=args.root, prune=args.prune, progress=_progress(show))
        if args.json:
            print(json.dumps({"store": store.uri, "namespace": ingestor.namespace, **summary.as_dict()}))
            return 0
        rate = summary.chunks_embedded / summary.seconds if summary.seconds else 0.0
        print(
            f"ingested into {store.uri} (namespace {ingestor.namespace!r}) in {summary.seconds:.1f}s: "
            f"{summary.added} added, {summary.updated} updated, {summary.unchanged} unchanged, "
            f"{summary.deleted} deleted, {len(summary.skipped)} skipped"
        )
        print(
            f"  chunks: {summary.chunks_written} written, {summary.chunks_deleted} deleted, "
            f"{summary.chunks_embedded} embedded ({rate:.0f}/s)"
        )
        for item in summary.skipped:
            print(f"  skipped {item.path}: {item.reason}")
    return 0


def _shorten(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def search(args: argparse.Namespace) -> int:
    from ragraph_retrieval import filters
    from ragraph_retrieval.embedder import EncoderEmbedder
    from ragraph_retrieval.store import open_store

    from .tokens import resolve

    where = filters.load(args.filter)
    token = resolve(args.token, args.encoder_url)
    with EncoderEmbedder(args.encoder_url, priority="interactive", token=token) as embedder:
        vector = embedder.embed([args.query])[0]
    with open_store(args.store) as store:
        matches = store.query(vector, args.top_k, where, args.namespace)
    rows: list[dict[str, Any]] = [
        {
            "rank": rank,
            "id": m.id,
            "doc_id": m.metadata.get("doc_id"),
            "chunk": m.metadata.get("chunk"),
            "score": round(m.score, 6),
            "text": m.metadata.get("text", ""),
            "metadata": {k: v for k, v in m.metadata.items() if k not in ("text",)},
        }
        for rank, m in enumerate(matches, 1)
    ]
    if args.json:
        print(json.dumps({"query": args.query, "results": rows}))
        return 0
    if not rows:
        print("no results")
        return 0
    for row in rows:
        print(f"{row['rank']:>2}. {row['score']:.3f}  {row['doc_id']} #{row['chunk']}")
        print(f"    {_shorten(row['text'], 160)}")
    return 0


def add_commands(commands: Any) -> None:
    ing = commands.add_parser("ingest", help="chunk, embed (via the encoder service) and store files; idempotent")
    ing.add_argument("paths", nargs="+", help="files or folders")
    add_store_args(ing)
    ing.add_argument("--root", help="document ids are paths relative to this folder (default: each PATH)")
    ing.add_argument("--prune", action="store_true", help="delete documents whose files are gone")
    ing.add_argument(
        "--encoder-model",
        default="sentence-transformers/all-MiniLM-L6-v2",
        help="tokenizer for chunk sizes: the encoder service's model id or path",
    )
    ing.add_argument("--chunk-tokens", type=int, default=192, help="target chunk size in encoder tokens")
    ing.add_argument("--overlap-tokens", type=int, default=32, help="tokens a chunk repeats from the previous one")
    ing.add_argument("--batch-size", type=int, default=64, help="texts per encoder request")
    ing.add_argument("--commit-every", type=int, default=256, help="embed this many chunks, then write their documents")
    ing.add_argument("--no-progress", action="store_true", help="no progress bar")
    ing.set_defaults(func=ingest)

    se = commands.add_parser("search", help="nearest chunks to a query")
    se.add_argument("query")
    add_store_args(se)
    se.add_argument("--top-k", type=int, default=5)
    se.add_argument("--filter", help='metadata filter, Pinecone syntax, e.g. \'{"doc_id": {"$eq": "a.md"}}\'')
    se.set_defaults(func=search)
