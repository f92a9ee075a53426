"""Load generators of bench/llm.py: the prompts, and ``service_load`` driving ragraph's LLM service
with concurrent V2 streams (a burst, or starts spread out for a steady state), with the figures
every setup reports (tok/s, TTFT, inter-token gaps)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.fixtures.servers import Service

TOPICS = ["the printing press", "vector search", "a busy kitchen", "network retries", "movable type", "a RAG router"]


def prompts(n: int) -> list[str]:
    return [f"Request {i}: write a short note about {TOPICS[i % len(TOPICS)]} and why it matters" for i in range(n)]


def messages(text: str) -> str:
    """The prompt as a one-turn chat, JSON (the LLM's ``messages`` input): each server applies the
    model's own chat template, as the graph's generate node has it do."""
    return json.dumps([{"role": "user", "content": text}])


@dataclass
class Load:
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    server_ttft: list[float] = field(default_factory=list)
    inter: list[float] = field(default_factory=list)
    per_request: list[int] = field(default_factory=list)  # tokens of each measured request
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
            await client.infer("llm", {"messages": [messages(text)]}, params)
        origin = time.perf_counter()

        async def one_stream(k: int) -> None:
            await asyncio.sleep(k * ramp / streams)
            for r in range(rounds):
                sent = time.perf_counter()
                measured = sent - origin >= ramp
                last, ttft, inter = sent, 0.0, []
                async for response in client.stream(
                    "llm", {"messages": [messages(texts[k * rounds + r])]}, params, style="mlserver"
                ):
                    now = time.perf_counter()
                    if "completion_tokens" in response.parameters:
                        if not ramp:
                            load.tokens += int(response.parameters["completion_tokens"])
                        if measured:
                            load.server_ttft.append(float(response.parameters["ttft_ms"]) / 1e3)
                            load.ttft.append(ttft)
                            load.inter.extend(inter)
                            load.per_request.append(int(response.parameters["completion_tokens"]))
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


@dataclass
class Result:
    """One row of the bench's table."""

    server: str  # "ragraph" or the anchor's name
    streams: int
    mode: str  # "burst" (all start at once) or "steady" (starts spread out)
    rate: float  # aggregate tok/s
    ttft_p50: float
    ttft_p95: float
    inter_p50: float
    tokens_per_request: float

    @property
    def label(self) -> str:
        if self.mode == "burst":
            return f"{self.server}, {self.streams} stream{'s' if self.streams > 1 else ''}" + (
                ", all at once" if self.streams > 1 else ""
            )
        return f"{self.server}, {self.streams} streams, steady state"


def report(server: str, streams: int, mode: str, load: Load) -> Result:
    """The row of one load, printed as it comes."""
    tokens = statistics.mean(load.per_request) if load.per_request else float("nan")
    row = Result(
        server,
        streams,
        mode,
        load.tokens / load.wall,
        pct(load.ttft, 0.5),
        pct(load.ttft, 0.95),
        statistics.median(load.inter) if load.inter else float("nan"),
        tokens,
    )
    engine = f" (in the engine: {pct(load.server_ttft, 0.5) * 1e3:.1f} ms)" if load.server_ttft else ""
    print(
        f"  {row.label}: {row.rate:.1f} tok/s, TTFT p50 {row.ttft_p50 * 1e3:.1f} ms{engine}, "
        f"inter-token p50 {row.inter_p50 * 1e3:.1f} ms, {tokens:.1f} tokens/request",
        flush=True,
    )
    return row
