"""The router's own cost: overhead per request and time to first token through the graph, against
the nodes it calls, measured side by side in one run.

    python bench/graph.py [--model PATH] [--requests 200] [--ttft-requests 60] [--tokens 8] [--top-k K]
                          [--context-window 384] [--profile-requests 100]

Starts ``ragraph serve encoder``, ``ragraph serve llm`` (without --model: the ~19.5M-param
random-weight Llama of tests/fixtures/tiny_llm.py, kind ``bench``) and ``ragraph serve router``
as subprocesses on loopback, and ingests ``bench/retrieval/corpus`` through the encoder into a
temp ``local://`` store. Questions come from ``bench/retrieval/questions.jsonl`` (those the guard
lets through to the LLM). One client, one request at a time (unloaded latency):

- **Router overhead** = end-to-end latency seen by the client (``ModelInfer``) minus the sum of
  the per-node ``ms`` of the ``nodes`` response parameter, over ``--requests`` requests; p50/p95
  and whether p50 <= 3 ms. As many ``debug=true`` requests are interleaved: their trace's
  ``total_ms`` (the executor's own clock) splits the overhead into the part outside the executor
  (client, gRPC both ways, the servicer's conversions) and the part inside it, between nodes. The
  ServerReady round trip is printed as the transport floor.
- **TTFT**: through the router's stream (request sent -> first ``answer`` delta) vs streaming
  the same chat messages straight to the LLM node (built in this process by the router's own
  ``PromptBuilder`` from the same retrieval) plus the request's retrieval time (guard + encode +
  retrieve node ms). The two are measured alternately, question by question; greedy answers are
  compared to show that both paths sent the same prompt.
- **Profile** (``--profile-requests`` > 0): the router runs under a launcher that turns cProfile
  on and off on SIGUSR1/SIGUSR2; an extra pass of requests (not part of the figures above) is
  profiled and the router's top functions by own time are printed.

The LLM is served with ``--context-window 384`` by default (``--context-window 0``: the model's
own): the bench Llama's byte-level tokenizer is trained on a few sentences, so the graph's prompt
(4 passages, ~1000 tokens by the router's counter) is about twice as many of its tokens; prefilling
them on a 2-core CPU makes every request take seconds without changing what the router costs.
The LLM cuts the prompt to the window itself (passages first), on both paths alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragraph_client.client import InferenceClient  # noqa: E402
from ragraph_client.tensors import InferResponse  # noqa: E402

from tests.fixtures.servers import Service, _await_ready, free_port, start_service  # noqa: E402
from tests.fixtures.tiny_llm import build_tiny_llm  # noqa: E402

DATA = REPO / "bench" / "retrieval"
GOAL_MS = 3.0
RETRIEVAL_NODES = ("guard", "encode", "retrieve")

# Runs ``ragraph serve router``; SIGUSR1 starts profiling the main thread (the event loop), SIGUSR2
# stops it and writes the stats to argv[1].
PROFILED_ROUTER = """
import cProfile, signal, sys
profile = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, lambda *_: (profile.disable(), profile.dump_stats(sys.argv[1])))
from ragraph_cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_nodes(model_dir: str, device: str, window: int, root: Path) -> tuple[Service, Service]:
    with ThreadPoolExecutor(2) as pool:  # both load at once
        args = ["encoder", "--device", device]
        encoder = pool.submit(start_service, args, root / "encoder.log", ["encoder", "classifier"])
        args = ["llm", "--model", model_dir, "--device", device, *(["--context-window", str(window)] if window else [])]
        llm = pool.submit(start_service, args, root / "llm.log", ["llm"])
        return encoder.result(), llm.result()


def ingest(encoder: Service, root: Path) -> str:
    from ragraph_retrieval.chunking import Chunker
    from ragraph_retrieval.embedder import EncoderEmbedder
    from ragraph_retrieval.ingest import Ingestor
    from ragraph_retrieval.store import open_store
    from ragraph_retrieval.tokens import encoder_counter

    uri = f"local://{root}/store"
    counter, limit = encoder_counter()
    with open_store(uri) as store, EncoderEmbedder(encoder.grpc_url) as embedder:
        corpus = str(DATA / "corpus")
        summary = Ingestor(store, embedder, Chunker(counter, limit)).run([corpus], root=corpus)
    print(f"ingested {summary.added} documents ({summary.chunks_written} chunks) in {summary.seconds:.1f} s")
    return uri


def start_router(env: dict[str, str], root: Path, profile: Path) -> Service:
    port = free_port()
    args = ["serve", "router", "--grpc-port", str(port)]
    cmd = [sys.executable, "-c", PROFILED_ROUTER, str(profile), *args]
    log_path = root / "router.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
    process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=REPO)
    return _await_ready(Service(process, port, 0, 0, log_path), ["rag"], 120)


def node_ms(response: InferResponse) -> dict[str, float]:
    return {name: float(node["ms"]) for name, node in json.loads(response.parameters["nodes"]).items()}


@dataclass
class Overhead:
    e2e: list[float] = field(default_factory=list)
    nodes: list[float] = field(default_factory=list)
    overhead: list[float] = field(default_factory=list)
    debug_overhead: list[float] = field(default_factory=list)
    outside: list[float] = field(default_factory=list)  # debug requests: e2e - executor total
    inside: list[float] = field(default_factory=list)  # debug requests: executor total - sum of nodes
    by_node: dict[str, list[float]] = field(default_factory=dict)
    prompt_tokens: list[float] = field(default_factory=list)


def measure_overhead(client: InferenceClient, questions: list[str], n: int, params: dict[str, Any]) -> Overhead:
    out = Overhead()
    for i in range(2 * n):
        debug = i % 2 == 1
        question = questions[(i // 2) % len(questions)]
        started = time.perf_counter()
        reply = client.infer("rag", {"question": [question]}, {**params, "debug": True} if debug else params)
        e2e = (time.perf_counter() - started) * 1e3
        nodes = node_ms(reply)
        node_sum = sum(nodes.values())
        if debug:
            total = float(json.loads(reply.parameters["debug"])["total_ms"])
            out.debug_overhead.append(e2e - node_sum)
            out.outside.append(e2e - total)
            out.inside.append(total - node_sum)
            continue
        out.e2e.append(e2e)
        out.nodes.append(node_sum)
        out.overhead.append(e2e - node_sum)
        out.prompt_tokens.append(float(reply.parameters["prompt_tokens"]))
        for name, ms in nodes.items():
            out.by_node.setdefault(name, []).append(ms)
    return out


def prompt_messages(encoder: Service, store_uri: str, questions: list[str], top_k: int) -> dict[str, str]:
    """The router's ``prompt.messages`` for each question: the same embedding, store query and
    ``PromptBuilder`` (the rag graph's budget of 1536 tokens, the router's token counter)."""
    from ragraph_retrieval.store import open_store
    from ragraph_retrieval.tokens import encoder_counter, prompt_counter
    from ragraph_router.prompt import PromptBuilder

    counter, _ = encoder_counter()
    builder = PromptBuilder(prompt_counter("cl100k_base", counter), 1536)
    out = {}
    with InferenceClient(encoder.grpc_url, timeout=30) as client, open_store(store_uri) as store:
        for question in questions:
            vector = client.infer("encoder", {"text": [question]}).output("embedding").as_numpy()[0]
            out[question] = json.dumps(builder.build(question, store.query(vector, top_k, None, None)).messages)
    return out


def first_delta(stream: Iterable[InferResponse], started: float, name: str) -> tuple[float, str, InferResponse]:
    """(ms to the first non-empty ``name`` delta, the whole text, the last response)."""
    ttft, parts, last = float("nan"), [], None
    for response in stream:
        last = response
        for tensor in response.outputs:
            if tensor.name == name and tensor.datatype == "BYTES" and (text := "".join(tensor.as_strings())):
                if not parts:
                    ttft = (time.perf_counter() - started) * 1e3
                parts.append(text)
    assert last is not None
    return ttft, "".join(parts), last


@dataclass
class Ttft:
    graph: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    retrieval: list[float] = field(default_factory=list)
    prompt: list[float] = field(default_factory=list)
    extra: list[float] = field(default_factory=list)  # graph - (direct + retrieval), per question
    stream_overhead: list[float] = field(default_factory=list)  # stream end to end - sum of nodes
    same_answer: int = 0


def measure_ttft(
    router: InferenceClient, llm: InferenceClient, messages: dict[str, str], n: int, params: dict[str, Any]
) -> Ttft:
    out = Ttft()
    questions = list(messages)
    llm_params = {"max_tokens": params["max_tokens"], "temperature": "0"}  # MLServer drops double params
    for i in range(n):
        question = questions[i % len(questions)]
        started = time.perf_counter()
        stream = router.stream("rag", {"question": [question]}, params)
        graph_ttft, graph_text, final = first_delta(stream, started, "answer")
        e2e = (time.perf_counter() - started) * 1e3
        nodes = node_ms(final)
        started = time.perf_counter()
        stream = llm.stream("llm", {"messages": [messages[question]]}, llm_params, style="mlserver")
        direct_ttft, direct_text, _ = first_delta(stream, started, "text")
        retrieval = sum(nodes[name] for name in RETRIEVAL_NODES)
        out.graph.append(graph_ttft)
        out.direct.append(direct_ttft)
        out.retrieval.append(retrieval)
        out.prompt.append(nodes["prompt"])
        out.extra.append(graph_ttft - direct_ttft - retrieval)
        out.stream_overhead.append(e2e - sum(nodes.values()))
        out.same_answer += graph_text == direct_text
    return out


def profile_pass(
    router: Service, client: InferenceClient, questions: list[str], n: int, params: dict[str, Any], path: Path
) -> None:
    router.process.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    started = time.perf_counter()
    for i in range(n):
        client.infer("rag", {"question": [questions[i % len(questions)]]}, params)
    wall = time.perf_counter() - started
    router.process.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # let the dump finish
    stats = pstats.Stats(str(path))
    entries = [
        (tt, nc, f"{Path(file).name}:{line}({name})" if line else name, _area(file, name))
        for (file, line, name), (_, nc, tt, _, _) in stats.stats.items()  # type: ignore[attr-defined]
        if "poll' of 'select.epoll" not in name
    ]
    busy = sum(e[0] for e in entries)
    print(
        f"\nrouter event loop under cProfile, {n} extra requests in {wall:.1f} s: {busy * 1e3 / n:.2f} ms of "
        "Python per request outside epoll waits (profiler overhead included)"
    )
    areas: dict[str, float] = {}
    for tt, _, _, area in entries:
        areas[area] = areas.get(area, 0.0) + tt
    print(
        "by area (ms per request): "
        + ", ".join(f"{a} {t * 1e3 / n:.2f}" for a, t in sorted(areas.items(), key=lambda x: -x[1]))
    )
    print("| function | calls per request | own ms per request |\n|---|---:|---:|")
    for tt, nc, label, _ in sorted(entries, reverse=True)[:15]:
        print(f"| `{label}` | {nc / n:.1f} | {tt * 1e3 / n:.3f} |")


def _area(file: str, name: str) -> str:
    for needle, area in (
        ("ragraph_router", "router"),
        ("ragraph_retrieval", "retrieval"),
        ("ragraph_client", "ragraph_client"),
        ("grpc", "grpc"),
        ("google/protobuf", "protobuf"),
        ("asyncio", "asyncio"),
        ("json", "json"),
    ):
        if needle in file:
            return area
    if "tokenizers" in name or "tokenizers" in file or "transformers" in file:
        return "tokenizer"
    if "FromString" in name or "SerializeToString" in name:
        return "protobuf"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="local LLM directory (default: build the bench Llama)")
    parser.add_argument("--kind", default="bench", help="tests/fixtures/tiny_llm.py kind when --model is not given")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=200, help="ModelInfer requests for the overhead")
    parser.add_argument("--ttft-requests", type=int, default=60)
    parser.add_argument("--profile-requests", type=int, default=100, help="0: no profile pass")
    parser.add_argument("--tokens", type=int, default=8, help="max_tokens per request (greedy)")
    parser.add_argument("--top-k", type=int, help="passages retrieved per request (default: the graph's 4)")
    parser.add_argument("--context-window", type=int, default=384, help="the LLM's window (0: the model's)")
    parser.add_argument("--questions", type=int, default=20, help="distinct questions used")
    args = parser.parse_args()
    import torch

    model_dir = args.model or str(
        build_tiny_llm(Path(tempfile.gettempdir()) / f"ragraph-bench-{args.kind}", kind=args.kind)
    )
    root = Path(tempfile.mkdtemp(prefix="ragraph-bench-graph-"))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(
        f"machine: {machine}; model {model_dir}, context window {args.context_window or 'of the model'}; "
        f"{args.tokens} greedy tokens, top_k {args.top_k or 'of the graph'}",
        flush=True,
    )
    params: dict[str, Any] = {"max_tokens": args.tokens, "temperature": 0.0}
    if args.top_k:
        params["top_k"] = args.top_k
    encoder, llm = start_nodes(model_dir, args.device, args.context_window, root)
    router = None
    try:
        store_uri = ingest(encoder, root)
        env = {"RAGRAPH_ENCODER_URL": encoder.grpc_url, "RAGRAPH_LLM_URL": llm.grpc_url, "RAGRAPH_STORE": store_uri}
        router = start_router(env, root, root / "router.prof")
        with (
            InferenceClient(router.grpc_url, timeout=120) as client,
            InferenceClient(llm.grpc_url, timeout=120) as direct,
        ):
            lines = (DATA / "questions.jsonl").read_text().splitlines()
            questions, tried = [], 0
            for line in lines:  # warm-up, and keep what the guard lets through to the LLM
                question = json.loads(line)["question"]
                tried += 1
                if "generate" in node_ms(client.infer("rag", {"question": [question]}, params)):
                    questions.append(question)
                if len(questions) == args.questions:
                    break
            print(f"{len(questions)} questions ({tried} tried) pass the guard", flush=True)
            floor = []
            for _ in range(200):
                started = time.perf_counter()
                client.ready()
                floor.append((time.perf_counter() - started) * 1e3)
            overhead = measure_overhead(client, questions, args.requests, params)
            n = len(overhead.overhead)
            print(f"router overhead p50 {pct(overhead.overhead, 0.5):.2f} ms over {n} requests", flush=True)
            messages = prompt_messages(encoder, store_uri, questions, args.top_k or 4)
            ttft = measure_ttft(client, direct, messages, args.ttft_requests, params)
            if args.profile_requests:
                profile_pass(router, client, questions, args.profile_requests, params, root / "router.prof")
    finally:
        if router is not None:
            router.stop()
        llm.stop()
        encoder.stop()

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {pct(values, 0.5):.2f} | {pct(values, 0.95):.2f} |"

    t = len(ttft.graph)
    print("\n| measure (ms) | p50 | p95 |\n|---|---:|---:|")
    print(row("ServerReady round trip (transport floor)", floor))
    print(row(f"end to end, ModelInfer ({n} requests)", overhead.e2e))
    print(row("sum of node times", overhead.nodes))
    print(f"| &nbsp;&nbsp;(LLM prompt tokens: {pct(overhead.prompt_tokens, 0.5):.0f}) | | |")
    for name in ("guard", "encode", "retrieve", "prompt", "generate", "classify"):
        print(row(f"&nbsp;&nbsp;node {name}", overhead.by_node.get(name, [])))
    print(row("**router overhead** = end to end - sum of nodes", overhead.overhead))
    print(row(f"same, debug=true ({len(overhead.debug_overhead)} requests)", overhead.debug_overhead))
    print(row("&nbsp;&nbsp;outside the executor (client, gRPC, servicer)", overhead.outside))
    print(row("&nbsp;&nbsp;inside the executor, between nodes", overhead.inside))
    print(row(f"stream: end to end - sum of nodes ({t} requests)", ttft.stream_overhead))
    print(row("graph TTFT (router stream, first answer delta)", ttft.graph))
    print(row("LLM-direct TTFT (same messages)", ttft.direct))
    print(row("retrieval (guard + encode + retrieve)", ttft.retrieval))
    print(row("prompt building (prompt node)", ttft.prompt))
    print(row("graph TTFT - (LLM-direct TTFT + retrieval), per question", ttft.extra))
    p50 = pct(overhead.overhead, 0.5)
    print(f"\nrouter overhead p50 {p50:.2f} ms: goal <= {GOAL_MS:.0f} ms {'met' if p50 <= GOAL_MS else 'NOT met'}")
    ratio = pct(ttft.graph, 0.5) / (pct(ttft.direct, 0.5) + pct(ttft.retrieval, 0.5))
    print(
        f"graph TTFT p50 / (LLM-direct TTFT p50 + retrieval p50) = {ratio:.2f}; "
        f"same greedy answer both ways: {ttft.same_answer}/{t}"
    )


if __name__ == "__main__":
    main()
