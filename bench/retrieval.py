"""Retrieval quality and ingest throughput through the real encoder service.

    python bench/retrieval.py [--chunk-tokens 192] [--overlap-tokens 32] [--sweep] [--misses] [--ingest]

Quality: starts ``ragraph serve encoder`` as a subprocess, ingests ``bench/retrieval/corpus``
(document ids are paths relative to it) into a temp ``local://`` store with ``Ingestor`` +
``EncoderEmbedder``, embeds every question of ``questions.jsonl`` through the service, queries
the top chunks and keeps each document's first appearance. Prints recall@1/@3/@5 and MRR as a
markdown table; ``--sweep`` adds one row per chunk size of ``--sweep-sizes``; ``--misses`` lists
the questions whose document is not in the top 3.

Throughput (``--ingest``): the corpus copied ``--copies`` times, ingested end to end (chunking,
embedding through the service, store writes) with every EncoderEmbedder ``batch_size`` x
``in_flight`` of ``--ingest-batch`` / ``--in-flight-sweep``, next to in-process
``SentenceTransformer.encode`` of the same chunk texts at the same batch size, interleaved over
``--repeat`` rounds. Reported per wall second (best round) and per CPU second of the bench
process plus the service process (median round: other load on a shared machine steals mostly
wall time). (Runs before the encoder's token counting got its own tokenizer copy used
``in_flight`` 1 for quality runs: two requests in flight could race on one shared tokenizer.)
In-process encoding uses sentence-transformers directly: ragraph_encoder (MLServer stubs) cannot
share a process with ragraph_client.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragraph_client.errors import RagraphError  # noqa: E402
from ragraph_retrieval.chunking import Chunker  # noqa: E402
from ragraph_retrieval.documents import SourceFile, find_files, read_text  # noqa: E402
from ragraph_retrieval.embedder import EncoderEmbedder  # noqa: E402
from ragraph_retrieval.ingest import Ingestor, IngestSummary  # noqa: E402
from ragraph_retrieval.store import open_store  # noqa: E402
from ragraph_retrieval.tokens import DEFAULT_ENCODER, HFTokenCounter, encoder_counter, resolve_encoder_path  # noqa: E402

from tests.fixtures.servers import start_service  # noqa: E402

DATA = REPO / "bench" / "retrieval"


@dataclass
class Quality:
    chunk_tokens: int
    overlap_tokens: int
    chunks: int
    docs: int
    ingest_s: float
    ranks: list[int | None]  # 1-based rank of the expected document, None when not retrieved
    firsts: list[list[str]]  # retrieved documents, best first

    def recall(self, k: int) -> float:
        return sum(1 for r in self.ranks if r is not None and r <= k) / len(self.ranks)

    @property
    def mrr(self) -> float:
        return sum(1 / r for r in self.ranks if r is not None) / len(self.ranks)


def load_questions(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ingest(
    url: str, corpus: Path, store_path: Path, chunker: Chunker, batch_size: int, in_flight: int
) -> IngestSummary:
    with (
        open_store(f"local://{store_path}") as store,
        EncoderEmbedder(url, batch_size=batch_size, in_flight=in_flight) as embedder,
    ):
        return Ingestor(store, embedder, chunker).run([str(corpus)], root=str(corpus))


def quality(
    url: str, args: argparse.Namespace, counter: HFTokenCounter, limit: int, chunk_tokens: int, root: Path
) -> Quality:
    chunker = Chunker(counter, limit, min(chunk_tokens, limit), args.overlap_tokens)
    store_path = root / f"quality-{chunk_tokens}"
    summary = ingest(url, args.corpus, store_path, chunker, args.batch_size, args.in_flight)
    questions = load_questions(args.questions)
    with EncoderEmbedder(url, batch_size=args.batch_size, in_flight=args.in_flight) as embedder:
        vectors = embedder.embed([q["question"] for q in questions])
    ranks: list[int | None] = []
    firsts: list[list[str]] = []
    with open_store(f"local://{store_path}") as store:
        known = store.document_ids()
        for q, vector in zip(questions, vectors, strict=True):
            if q["doc"] not in known:
                raise SystemExit(f"question {q['question']!r}: document {q['doc']!r} is not in the corpus")
            docs: list[str] = []
            for match in store.query(vector, args.top_chunks):
                doc = match.metadata.get("doc_id")
                if isinstance(doc, str) and doc not in docs:
                    docs.append(doc)
            ranks.append(docs.index(q["doc"]) + 1 if q["doc"] in docs else None)
            firsts.append(docs)
    return Quality(
        chunk_tokens, args.overlap_tokens, summary.chunks_written, len(known), summary.seconds, ranks, firsts
    )


# --- ingest throughput --------------------------------------------------------------------------


def replicate(corpus: Path, copies: int, root: Path) -> Path:
    target = root / "replicated"
    for i in range(copies):
        shutil.copytree(corpus, target / f"copy{i}")
    return target


def chunk_texts(folder: Path, chunker: Chunker) -> list[str]:
    """The chunk texts ingest embeds, in the order it embeds them."""
    texts: list[str] = []
    for item in find_files([str(folder)], str(folder)):
        if isinstance(item, SourceFile):
            text = read_text(item.path)
            if text and text.strip():
                texts.extend(c.text for c in chunker.split(text, item.kind))
    return texts


@dataclass
class Rate:
    """One setting's runs: chunks per wall second, and per CPU second of the bench process plus
    the service process (robust to other load on the machine, which only steals wall time)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds used so far by this process (pid None) or by process ``pid`` (from /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measure(rate: Rate, n: int, run: Callable[[], object], service_pid: int | None) -> None:
    wall, cpu = time.perf_counter(), cpu_seconds(None) + (cpu_seconds(service_pid) if service_pid else 0.0)
    run()
    cpu = cpu_seconds(None) + (cpu_seconds(service_pid) if service_pid else 0.0) - cpu
    rate.wall.append(n / (time.perf_counter() - wall))
    rate.cpu.append(n / cpu)


def throughput(url: str, pid: int, args: argparse.Namespace, counter: HFTokenCounter, limit: int, root: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    chunker = Chunker(counter, limit, min(args.chunk_tokens, limit), args.overlap_tokens)
    folder = replicate(args.corpus, args.copies, root)
    start = time.perf_counter()
    texts = chunk_texts(folder, chunker)
    chunk_s = time.perf_counter() - start
    tokens = sorted(counter.count_many(texts))
    print(
        f"ingest corpus: {args.copies} copies of {args.corpus.name}/, {len(texts)} chunks of <= "
        f"{chunker.chunk_tokens} tokens (median {tokens[len(tokens) // 2]}); chunking alone {chunk_s:.2f} s "
        f"({len(texts) / chunk_s:.0f} chunks/s); torch {torch.get_num_threads()} threads",
        flush=True,
    )
    model = SentenceTransformer(resolve_encoder_path(DEFAULT_ENCODER), device="cpu")
    model.encode(texts[:8], batch_size=8)  # warm-up
    with EncoderEmbedder(url) as warm:
        warm.embed(texts[:8])
    batches = [int(b) for b in args.ingest_batch.split(",")]
    flights = [int(f) for f in args.in_flight_sweep.split(",")]
    rates: dict[str, Rate] = {}
    for round_ in range(args.repeat):
        for batch in batches:
            label = f"in-process `encode`, batch {batch}"
            rate = rates.setdefault(label, Rate())

            def encode(batch: int = batch) -> None:
                model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)

            measure(rate, len(texts), encode, None)
            print(f"  round {round_ + 1}: {label}: {rate.wall[-1]:.1f} chunks/s, {rate.cpu[-1]:.1f}/CPU-s", flush=True)
            for flight in flights:
                label = f"service ingest end to end, batch_size {batch}, in_flight {flight}"
                rate = rates.setdefault(label, Rate())
                store_path = root / f"ingest-{round_}-{batch}-{flight}"

                def run(batch: int = batch, flight: int = flight, store_path: Path = store_path) -> None:
                    summary = ingest(url, folder, store_path, chunker, batch, flight)
                    assert summary.chunks_embedded == len(texts), (summary.chunks_embedded, len(texts))

                try:
                    measure(rate, len(texts), run, pid)
                except RagraphError as exc:  # the encoder's tokenizer race, see docs/benchmarks.md
                    rate.failed.append(str(exc).splitlines()[0][:110])
                    print(f"  round {round_ + 1}: {label}: FAILED: {rate.failed[-1]}", flush=True)
                    continue
                finally:
                    shutil.rmtree(store_path, ignore_errors=True)
                print(
                    f"  round {round_ + 1}: {label}: {rate.wall[-1]:.1f} chunks/s, {rate.cpu[-1]:.1f}/CPU-s", flush=True
                )
    print(
        f"\n{len(texts)} chunks, {args.repeat} rounds; wall: best round (the least disturbed), CPU: median round; "
        f"load average now {os.getloadavg()[0]:.2f}:\n"
    )
    print("| setup | chunks/s (best) | vs in-process | chunks per CPU-s (median) | vs in-process | runs failed |")
    print("|---|---:|---:|---:|---:|---:|")
    for batch in batches:
        base = rates[f"in-process `encode`, batch {batch}"]
        base_wall, base_cpu = max(base.wall), statistics.median(base.cpu)
        for label, rate in rates.items():
            if label.endswith(f"batch {batch}") or f"batch_size {batch}," in label:
                wall = max(rate.wall, default=float("nan"))
                cpu = statistics.median(rate.cpu) if rate.cpu else float("nan")
                print(
                    f"| {label} | {wall:.1f} | {wall / base_wall:.2f} | {cpu:.1f} | {cpu / base_cpu:.2f} "
                    f"| {len(rate.failed)} of {args.repeat} |"
                )
    for label, rate in rates.items():
        if rate.failed:
            print(f"{label}: {len(rate.failed)} failed run(s): {rate.failed[0]}")
    service = {label: max(r.wall) for label, r in rates.items() if label.startswith("service") and r.wall}
    top = max(service, key=lambda label: service[label])
    ref = max(max(r.wall) for label, r in rates.items() if label.startswith("in-process"))
    print(f"fastest service setting: {top} ({service[top]:.1f} chunks/s, {service[top] / ref:.2f} of in-process)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=DATA / "corpus")
    parser.add_argument("--questions", type=Path, default=DATA / "questions.jsonl")
    parser.add_argument("--chunk-tokens", type=int, default=192)
    parser.add_argument("--overlap-tokens", type=int, default=32)
    parser.add_argument("--top-chunks", type=int, default=30, help="chunks fetched per question before dedupe")
    parser.add_argument("--batch-size", type=int, default=64, help="EncoderEmbedder batch_size for the quality runs")
    parser.add_argument("--in-flight", type=int, default=2, help="EncoderEmbedder in_flight for the quality runs")
    parser.add_argument("--sweep", action="store_true", help="also run every chunk size of --sweep-sizes")
    parser.add_argument("--sweep-sizes", default="96,192,254")
    parser.add_argument("--misses", action="store_true", help="list the questions missed at @3")
    parser.add_argument("--ingest", action="store_true", help="measure ingest throughput too")
    parser.add_argument("--copies", type=int, default=1, help="corpus copies for --ingest")
    parser.add_argument("--ingest-batch", default="32,64", help="EncoderEmbedder batch sizes for --ingest")
    parser.add_argument("--in-flight-sweep", default="1,2", help="EncoderEmbedder in_flight values for --ingest")
    parser.add_argument("--repeat", type=int, default=6, help="interleaved rounds for --ingest")
    args = parser.parse_args()
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}"
    )
    counter, limit = encoder_counter(DEFAULT_ENCODER)
    root = Path(tempfile.mkdtemp(prefix="ragraph-bench-retrieval-"))
    service = start_service(["encoder", "--device", "cpu"], root / "encoder.log", ["encoder"])
    try:
        sizes = [args.chunk_tokens]
        if args.sweep:
            sizes += [int(s) for s in args.sweep_sizes.split(",") if int(s) != args.chunk_tokens]
        results = []
        for size in sizes:
            result = quality(service.grpc_url, args, counter, limit, size, root)
            print(
                f"  chunk {size}/{args.overlap_tokens}: {result.chunks} chunks in {result.ingest_s:.1f} s, "
                f"recall@3 {result.recall(3):.3f}",
                flush=True,
            )
            results.append(result)
        if args.ingest:
            throughput(service.grpc_url, service.process.pid, args, counter, limit, root)
    finally:
        service.stop()
        shutil.rmtree(root, ignore_errors=True)

    n = len(results[0].ranks)
    head = f"{n} questions, {results[0].docs} documents in {args.corpus.name}/, top {args.top_chunks} chunks each"
    print(f"\n{head}:\n")
    print("| chunk / overlap tokens | chunks | recall@1 | recall@3 | recall@5 | MRR |\n|---|---:|---:|---:|---:|---:|")
    for r in sorted(results, key=lambda r: r.chunk_tokens):
        print(
            f"| {r.chunk_tokens} / {r.overlap_tokens} | {r.chunks} | {r.recall(1):.3f} | {r.recall(3):.3f} "
            f"| {r.recall(5):.3f} | {r.mrr:.3f} |"
        )
    if args.misses:
        main_run = results[0]
        questions = load_questions(args.questions)
        missed = [
            (q, rank, docs)
            for q, rank, docs in zip(questions, main_run.ranks, main_run.firsts, strict=True)
            if rank is None or rank > 3
        ]
        print(f"\nmissed at @3 with chunk {main_run.chunk_tokens}/{main_run.overlap_tokens}: {len(missed)} of {n}\n")
        print("| question | expected (rank) | retrieved first |\n|---|---|---|")
        for q, rank, docs in missed:
            print(f"| {q['question']} | {q['doc']} ({rank or '-'}) | {', '.join(docs[:3])} |")


if __name__ == "__main__":
    main()
