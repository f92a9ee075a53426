"""RAG latency while an ingest runs flat out, against the same graph idle, in one run.

    python bench/ingest_while_serving.py [--requests 40] [--copies 12] [--tokens 8] [--clients 1]

Starts, as ``ragraph up`` does (``OMP_WAIT_POLICY=PASSIVE`` and the encoder's bulk batches on one
thread, ``RAGRAPH_ENCODER_BULK_THREADS=1``: the services share the cores),
``ragraph serve encoder``, ``ragraph serve llm`` (the random-weight bench Llama of
tests/fixtures/tiny_llm.py, context window 384) and ``ragraph serve router`` (the shipped rag
graph: guard, encode, retrieve, generate, classify; the encoder nodes time out after 2 s) on
loopback, and ingests ``bench/retrieval/corpus`` into a temp ``local://`` store for the questions
to find. Then, with ``--clients`` closed-loop clients sending ``--requests`` questions each
(those of ``bench/retrieval/questions.jsonl``, ``max_tokens`` ``--tokens``, greedy):

- **idle**: nothing else runs;
- **ingest (bulk)**: an ingest runs flat out in another process into another namespace of the same
  store: the ingest library at ``ragraph ingest``'s defaults (192-token chunks, 64 texts per
  request, 2 requests in flight, ``priority=bulk``), over ``--copies`` copies of the corpus (each
  copy's text made unique, so nothing is skipped as unchanged); the measurement starts once the
  ingest is embedding, and the bench checks that it is still running at the end;
- **ingest (interactive)**: the same ingest sending ``priority=interactive``, as a client that
  does not say it is bulk would: what the priority is worth.

The phases alternate in ``--rounds`` rounds (each ingest slice starts a fresh ingest into a fresh
namespace), so that other load on the machine falls on all of them alike.

Printed side by side: RAG p50 / p99 / max latency, errors by gRPC code (DEADLINE_EXCEEDED at the
2 s encoder-node timeouts is the failure the priority exists to prevent), the p99 of the three
encoder nodes (guard, encode, classify), and the ingest's throughput (chunks embedded per second)
during the measurement, with an ingest alone for reference. The p99 ratio to idle is the figure to
watch (goal: at most 2, with zero deadline errors).

Then (``--big-request N``, default 1024; 0 skips it) one request of N texts of 4 KB with
``priority=bulk`` straight to the encoder, while one client keeps asking the classifier for a
guard verdict: how long the big request takes, the encoder's peak RSS (VmHWM) before and after
it, and the guard calls' latency meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragraph_client.client import InferenceClient  # noqa: E402
from ragraph_client.errors import RagraphError  # noqa: E402

from bench.llm_load import pct  # noqa: E402
from tests.fixtures.servers import Service, start_router, start_service  # noqa: E402
from tests.fixtures.tiny_llm import build_tiny_llm  # noqa: E402

DATA = REPO / "bench" / "retrieval"
# what `ragraph up` and compose set for services sharing cores
SHARED = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "RAGRAPH_ENCODER_BULK_THREADS": os.environ.get("RAGRAPH_ENCODER_BULK_THREADS", "1"),
}

# The ingest, in a process of its own: the library exactly as `ragraph ingest` builds it, printing
# a line per embedded batch so the bench can tell when it embeds and how fast.
INGEST = """
import sys, time
from ragraph_retrieval.chunking import Chunker
from ragraph_retrieval.embedder import EncoderEmbedder
from ragraph_retrieval.ingest import Ingestor
from ragraph_retrieval.store import open_store
from ragraph_retrieval.tokens import encoder_counter
url, store_uri, corpus, priority, namespace = sys.argv[1:6]
counter, limit = encoder_counter("sentence-transformers/all-MiniLM-L6-v2")
chunker = Chunker(counter, limit, min(192, limit), 32)
def progress(label, total):
    def tick(n):
        if label == "embed":
            print(f"embedded {n} {time.monotonic()}", flush=True)
    return tick
with open_store(store_uri) as store, EncoderEmbedder(url, batch_size=64, priority=priority) as embedder:
    ingestor = Ingestor(store, embedder, chunker, namespace, flush_chunks=256)
    summary = ingestor.run([corpus], root=corpus, progress=progress)
print("done", summary.chunks_embedded, summary.seconds, flush=True)
"""


@dataclass
class Phase:
    name: str
    latency_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    node_ms: dict[str, list[float]] = field(default_factory=dict)
    ingest_rate: float | None = None
    ingest_running_at_end: bool | None = None
    ingest_chunks: int = 0
    ingest_seconds: float = 0.0


class Ingest:
    """The ingest process and the embedded-chunk counts it reports."""

    def __init__(self, encoder: Service, store: str, corpus: Path, priority: str, namespace: str, log: Path) -> None:
        cmd = [sys.executable, "-c", INGEST, encoder.grpc_url, store, str(corpus), priority, namespace]
        self.log = log
        with open(log, "wb") as err:
            self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
        self.events: list[tuple[float, int]] = []
        self.done: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.split()
            if parts[:1] == ["embedded"]:
                self.events.append((float(parts[2]), int(parts[1])))
            elif parts[:1] == ["done"]:
                self.done = line.strip()

    def embedded_between(self, start: float, end: float) -> int:
        return sum(n for t, n in list(self.events) if start <= t <= end)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def make_corpus(root: Path, copies: int) -> Path:
    out = root / "ingest-corpus"
    for i in range(copies):
        for path in sorted((DATA / "corpus").rglob("*")):
            if path.is_file():
                target = out / f"copy{i}" / path.relative_to(DATA / "corpus")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f"Copy {i} of {path.name}.\n\n" + path.read_text())
    return out


def ask_all(router: Service, questions: list[str], clients: int, params: dict[str, Any], phase: Phase) -> None:
    def one_client(offset: int) -> None:
        with InferenceClient(router.grpc_url, timeout=60) as client:
            for question in questions[offset::clients]:
                start = time.monotonic()
                try:
                    reply = client.infer("rag", {"question": [question]}, {**params, "debug": True})
                except RagraphError as exc:
                    phase.errors[exc.code.name] += 1
                    continue
                phase.latency_ms.append((time.monotonic() - start) * 1000)
                for name, node in json.loads(str(reply.parameters["nodes"])).items():
                    phase.node_ms.setdefault(name, []).append(float(node["ms"]))

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))


def wait_embedding(ingest: Ingest, name: str) -> None:
    deadline = time.monotonic() + 300
    while not ingest.events:  # chunking done, the encoder is embedding
        if not ingest.running() or time.monotonic() > deadline:
            raise SystemExit(f"{name}: the ingest never started embedding ({ingest.done}):\n{ingest.stderr()}")
        time.sleep(0.2)


def run_slice(
    phase: Phase,
    router: Service,
    questions: list[str],
    args: argparse.Namespace,
    params: dict[str, Any],
    ingest: Ingest | None,
) -> None:
    """One slice of ``phase``: its share of the questions, with ``ingest`` in full flow if given."""
    if ingest is not None:
        wait_embedding(ingest, phase.name)
        time.sleep(3.0)  # in full flow: both requests in flight
    start = time.monotonic()
    ask_all(router, questions, args.clients, params, phase)
    end = time.monotonic()
    if ingest is not None:
        running = ingest.running()
        phase.ingest_running_at_end = (
            running if phase.ingest_running_at_end is None else (phase.ingest_running_at_end and running)
        )
        phase.ingest_chunks += ingest.embedded_between(start, end)
        phase.ingest_seconds += end - start
        phase.ingest_rate = phase.ingest_chunks / phase.ingest_seconds


def peak_rss_mib(service: Service) -> float:
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def big_request(encoder: Service, n: int) -> None:
    texts = [
        f"{i} " + ("a big request of long texts, each cut to the model's 256 tokens " * 70)[:4000] for i in range(n)
    ]
    before = peak_rss_mib(encoder)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    with ThreadPoolExecutor(1) as pool, InferenceClient(encoder.grpc_url, timeout=900) as client:
        start = time.monotonic()
        big = pool.submit(client.infer, "encoder", {"text": texts}, {"priority": "bulk"})
        while not big.done():
            t = time.monotonic()
            try:
                client.infer("classifier", {"text": ["how do I rotate the node token?"]}, timeout=2.0)
                latencies.append((time.monotonic() - t) * 1000)
            except RagraphError as exc:
                errors[exc.code.name] += 1
            time.sleep(0.1)
        shape = big.result().output("embedding").shape
        took = time.monotonic() - start
    print(
        f"\none request of {n} x 4 KB texts (priority=bulk): {took:.1f} s, embedding {shape}; encoder peak RSS "
        f"{before:.0f} MiB before, {peak_rss_mib(encoder):.0f} MiB after"
    )
    print(
        f"  guard calls meanwhile (2 s timeout): {len(latencies)} ok, p50 {pct(latencies, 0.5):.0f} ms, "
        f"p99 {pct(latencies, 0.99):.0f} ms, max {max(latencies, default=float('nan')):.0f} ms; "
        f"errors: {dict(errors) or 'none'}"
    )


def report(phases: list[Phase], machine: str) -> None:
    idle = phases[0]
    print(f"\nmachine: {machine}")
    print(
        f"{'phase':<22} {'ok':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99/idle':>8} {'guard p99':>9} "
        f"{'encode p99':>10} {'classify p99':>12} {'errors':<24} {'ingest chunks/s':>15}"
    )
    for p in phases:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(p.errors.items())) or "none"
        rate = f"{p.ingest_rate:.1f}" if p.ingest_rate is not None else "-"
        if p.ingest_running_at_end is False:
            rate += " (ended early)"
        p99 = pct(p.latency_ms, 0.99)
        print(
            f"{p.name:<22} {len(p.latency_ms):>4} {pct(p.latency_ms, 0.5):>8.0f} {p99:>8.0f} "
            f"{max(p.latency_ms, default=float('nan')):>8.0f} {p99 / pct(idle.latency_ms, 0.99):>8.2f} "
            f"{pct(p.node_ms.get('guard', []), 0.99):>9.0f} {pct(p.node_ms.get('encode', []), 0.99):>10.0f} "
            f"{pct(p.node_ms.get('classify', []), 0.99):>12.0f} "
            f"{errors:<24} {rate:>15}"
        )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop the services on the way out


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=40, help="RAG requests per phase")
    parser.add_argument("--rounds", type=int, default=4, help="the phases alternate this many times")
    parser.add_argument("--clients", type=int, default=1, help="closed-loop RAG clients")
    parser.add_argument("--copies", type=int, default=12, help="copies of the corpus the ingest embeds")
    parser.add_argument("--tokens", type=int, default=8, help="max_tokens per RAG request (greedy)")
    parser.add_argument("--skip-interactive", action="store_true", help="no ingest (interactive) phase")
    parser.add_argument("--big-request", type=int, default=1024, help="texts of the one big request (0: none)")
    args = parser.parse_args()
    import torch

    root = Path(tempfile.mkdtemp(prefix="ragraph-bench-ingest-serving-"))
    model_dir = str(build_tiny_llm(Path(tempfile.gettempdir()) / "ragraph-bench-bench", kind="bench"))
    load = os.getloadavg()
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, load average at start {load[0]:.1f}"
    )
    print(f"machine: {machine}", flush=True)
    with ThreadPoolExecutor(2) as pool:
        models = ["encoder", "classifier"]
        enc = pool.submit(start_service, ["encoder", "--device", "cpu"], root / "encoder.log", models, env=SHARED)
        llm_args = ["llm", "--model", model_dir, "--device", "cpu", "--context-window", "384"]
        llm_f = pool.submit(start_service, llm_args, root / "llm.log", ["llm"], env=SHARED)
        encoder, llm = enc.result(), llm_f.result()
    store = f"local://{root}/store"
    router = None
    ingests: list[Ingest] = []
    try:
        # the questions' store: the corpus once, in the default namespace
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ragraph_cli.main",
                "ingest",
                str(DATA / "corpus"),
                "--store",
                store,
                "--encoder-url",
                encoder.grpc_url,
                "--no-progress",
            ],
            check=True,
            cwd=REPO,
        )
        env = {"RAGRAPH_ENCODER_URL": encoder.grpc_url, "RAGRAPH_LLM_URL": llm.grpc_url, "RAGRAPH_STORE": store}
        env.update(SHARED)
        router = start_router(root / "router.log", env)
        lines = (DATA / "questions.jsonl").read_text().splitlines()
        pool_questions = [json.loads(line)["question"] for line in lines]
        questions = [pool_questions[i % len(pool_questions)] for i in range(args.requests)]
        params: dict[str, Any] = {"max_tokens": args.tokens, "temperature": 0.0}
        corpus = make_corpus(root, args.copies)
        ask_all(router, questions[:5], 1, params, Phase("warm-up"))

        priorities = ["bulk"] if args.skip_interactive else ["bulk", "interactive"]
        phases = [Phase("idle"), *(Phase(f"ingest ({p})") for p in priorities)]
        # the phases alternate in rounds, so that a change in the machine's other load hits them alike
        for r in range(args.rounds):
            share = questions[r :: args.rounds]
            run_slice(phases[0], router, share, args, params, None)
            for phase, priority in zip(phases[1:], priorities, strict=True):
                ingest = Ingest(
                    encoder, store, corpus, priority, f"{priority}-{r}", root / f"ingest-{priority}-{r}.log"
                )
                ingests.append(ingest)
                run_slice(phase, router, share, args, params, ingest)
                ingest.stop()
            print(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(f"{p.name} p99 {pct(p.latency_ms, 0.99):.0f} ms" for p in phases)
                + f"; load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        alone = Ingest(encoder, f"local://{root}/alone", corpus, "bulk", "alone", root / "ingest-alone.log")
        ingests.append(alone)
        wait_embedding(alone, "ingest alone")
        start = time.monotonic()
        time.sleep(30)
        rate = alone.embedded_between(start, time.monotonic()) / (time.monotonic() - start)
        alone.stop()
        report(phases, machine)
        print(f"ingest alone (bulk, no RAG traffic): {rate:.1f} chunks/s")
        if args.big_request:
            big_request(encoder, args.big_request)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        for ingest in ingests:
            ingest.stop()
        for service in (router, llm, encoder):
            if service is not None:
                service.stop()


if __name__ == "__main__":
    main()
