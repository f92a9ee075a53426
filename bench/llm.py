"""LLM throughput and latency: sequential ``model.generate`` vs the V2 service under 1, 4 and 16
concurrent streams, side by side in one run on the same local model.

    python bench/llm.py [--model PATH] [--kind bench|tiny|gpt2] [--tokens 32] [--requests 2]

Without --model it builds the ~19.5M-param random-weight Llama of tests/fixtures/tiny_llm.py.
Prints a markdown table: aggregate tok/s and ratio to sequential, TTFT p50/p95, inter-token p50,
and whether the goals hold (>= 5x at 16 streams; TTFT p50 at 16 <= 2x unloaded + one step).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.fixtures.servers import Service, start_service  # noqa: E402
from tests.fixtures.tiny_llm import build_tiny_llm  # noqa: E402

TOPICS = ["the printing press", "vector search", "a busy kitchen", "network retries", "movable type", "a RAG router"]


def prompts(n: int) -> list[str]:
    return [f"Request {i}: write a short note about {TOPICS[i % len(TOPICS)]} and why it matters" for i in range(n)]


def sequential(model_dir: str, device: str, n: int, tokens: int, packed: bool = False) -> float:
    """tok/s of plain ``model.generate`` on ``n`` prompts one after the other; with ``packed``, the
    model's linear layers are packed for oneDNN first, as the service does on CPU."""
    import torch
    from ragraph_serving.packed import pack_linears
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
    if packed:
        pack_linears(model)
    texts = prompts(n)
    generated = 0
    with torch.inference_mode():
        ids = tokenizer(texts[0], return_tensors="pt").to(device)
        model.generate(**ids, max_new_tokens=4, do_sample=False)  # warm-up
        start = time.perf_counter()
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").to(device)
            out = model.generate(**ids, max_new_tokens=tokens, do_sample=False)
            generated += out.shape[1] - ids["input_ids"].shape[1]
        elapsed = time.perf_counter() - start
    return generated / elapsed


@dataclass
class Load:
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    server_ttft: list[float] = field(default_factory=list)
    inter: list[float] = field(default_factory=list)
    wall: float = 0.0


async def counter_window(
    read: Callable[[], Awaitable[float]], ramp: float, first_done: asyncio.Event
) -> tuple[int, float]:
    """Tokens counted and seconds elapsed between the end of the ramp (every stream started) and
    the moment the first stream is done: the window where all streams run."""
    await asyncio.sleep(ramp)
    start_count, start = await read(), time.perf_counter()
    await first_done.wait()
    end_count, end = await read(), time.perf_counter()
    return int(end_count - start_count), end - start


async def service_load(service: Service, streams: int, tokens: int, rounds: int, ramp: float = 0.0) -> Load:
    """``streams`` clients, each sending ``rounds`` requests one after the other. With ``ramp`` = 0
    all start at once (a burst); otherwise client k starts at k * ramp / streams and only the
    requests sent after the ramp are measured (steady state, arrivals spread out)."""
    from ragraph_client.client import AsyncInferenceClient

    load = Load()
    params = {"max_tokens": tokens, "temperature": "0"}
    texts = prompts(streams * rounds)
    async with AsyncInferenceClient(service.grpc_url, timeout=600, float_params="string") as client:
        for text in prompts(3):  # the first requests after start-up run slower (allocations, lazy set-up)
            await client.infer("llm", {"prompt": [text]}, params)
        origin = time.perf_counter()

        async def one_stream(k: int) -> None:
            await asyncio.sleep(k * ramp / streams)
            for r in range(rounds):
                sent = time.perf_counter()
                measured = sent - origin >= ramp
                last, ttft, inter = sent, 0.0, []
                async for response in client.stream(
                    "llm", {"prompt": [texts[k * rounds + r]]}, params, style="mlserver"
                ):
                    now = time.perf_counter()
                    if "completion_tokens" in response.parameters:
                        if not ramp:
                            load.tokens += int(response.parameters["completion_tokens"])
                        if measured:
                            load.server_ttft.append(float(response.parameters["ttft_ms"]) / 1e3)
                            load.ttft.append(ttft)
                            load.inter.extend(inter)
                        break
                    if last == sent:
                        ttft = now - sent
                    else:
                        inter.append(now - last)
                    last = now
            done.append(time.perf_counter())
            first_done.set()

        async def window() -> None:
            """Throughput while every stream runs: the service's token counter."""
            load.tokens, load.wall = await counter_window(
                lambda: asyncio.to_thread(service.metric, "ragraph_llm_generated_tokens_total"), ramp, first_done
            )

        done: list[float] = []
        first_done = asyncio.Event()
        if ramp:
            await asyncio.gather(window(), *(one_stream(k) for k in range(streams)))
        else:
            await asyncio.gather(*(one_stream(k) for k in range(streams)))
            load.wall = max(done) - origin
    return load


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Row = tuple[str, int, float, float, float, float]


def report(label: str, streams: int, load: Load) -> Row:
    rate = load.tokens / load.wall
    row = (label, streams, rate, pct(load.ttft, 0.5), pct(load.ttft, 0.95), statistics.median(load.inter))
    print(
        f"  {label}: {rate:.1f} tok/s, TTFT p50 {row[3] * 1e3:.1f} ms "
        f"(in the engine: {pct(load.server_ttft, 0.5) * 1e3:.1f} ms), inter-token p50 {row[5] * 1e3:.1f} ms",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="local model directory (default: build the bench Llama)")
    parser.add_argument("--kind", default="bench", help="tests/fixtures/tiny_llm.py kind when --model is not given")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="requests per stream, one after the other")
    parser.add_argument(
        "--steady-rounds", type=int, default=6, help="requests per stream in the steady-state phase (longer window)"
    )
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--streams", default="1,4,16", help="concurrency levels, comma-separated")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment of the service only (e.g. RAGRAPH_LLM_MIXED_STEPS=false); repeatable",
    )
    args = parser.parse_args()
    import torch

    model_dir = args.model or str(
        build_tiny_llm(Path(tempfile.gettempdir()) / f"ragraph-bench-{args.kind}", kind=args.kind)
    )
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "none"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, GPU {gpu}, torch {torch.__version__}")
    print(f"model: {model_dir}, {args.tokens} tokens per request, greedy")
    seq_rate = sequential(model_dir, args.device, 16, args.tokens)
    print(f"  sequential generate, 16 prompts: {seq_rate:.1f} tok/s", flush=True)
    packed_rate = sequential(model_dir, args.device, 16, args.tokens, packed=True) if args.device == "cpu" else 0.0
    if packed_rate:
        print(f"  sequential generate, weights packed as the service packs them: {packed_rate:.1f} tok/s", flush=True)

    log = Path(tempfile.mkdtemp()) / "llm.log"
    service = start_service(
        ["llm", "--model", model_dir, "--device", args.device, "--max-batch-size", str(args.max_batch_size)],
        log,
        ["llm"],
        env=dict(item.split("=", 1) for item in args.service_env),
    )
    rows = []
    try:
        for streams in [int(n) for n in args.streams.split(",")]:
            # one stream: as many requests as a steady phase, so the unloaded TTFT is a median
            rounds = args.steady_rounds if streams == 1 else args.rounds
            burst = asyncio.run(service_load(service, streams, args.tokens, rounds))
            rows.append(report(f"service, {streams} streams, all starting at once", streams, burst))
            if streams > 1:  # spread the starts over one request's time: arrivals desynchronise
                per_request = burst.wall / rounds
                steady = asyncio.run(service_load(service, streams, args.tokens, args.steady_rounds, ramp=per_request))
                rows.append(report(f"service, {streams} streams, steady state", streams, steady))
    finally:
        service.stop()

    base = packed_rate or seq_rate  # the batching's own gain: against generate with the same kernels
    print(
        "\n| setup | tok/s | vs sequential | vs sequential, packed | TTFT p50 ms | TTFT p95 ms | inter-token p50 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| sequential `generate` | {seq_rate:.1f} | 1.00 | {seq_rate / base:.2f} | | | |")
    if packed_rate:
        print(f"| sequential `generate`, packed weights | {packed_rate:.1f} | {packed_rate / seq_rate:.2f} | 1.00 |||")
    for label, _, rate, p50, p95, inter in rows:
        print(
            f"| {label} | {rate:.1f} | {rate / seq_rate:.2f} | {rate / base:.2f} | {p50 * 1e3:.1f} | {p95 * 1e3:.1f} "
            f"| {inter * 1e3:.1f} |"
        )
    unloaded = rows[0][3]
    for label, streams, rate, p50, _, step in rows:
        if streams == 16:
            bound = 2 * unloaded + step
            ttft = "met" if p50 <= bound else "NOT met"
            print(
                f"{label}: {rate / seq_rate:.2f}x sequential generate, {rate / base:.2f}x with packed weights "
                f"(goal >= 5: {'met' if rate >= 5 * seq_rate else 'NOT met'}, "
                f"{'met' if rate >= 5 * base else 'NOT met'}); TTFT p50 {p50 * 1e3:.1f} ms vs 2 x "
                f"{unloaded * 1e3:.1f} + {step * 1e3:.1f} = {bound * 1e3:.1f} ms ({ttft})"
            )


if __name__ == "__main__":
    main()
