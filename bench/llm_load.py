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


@dataclass
class Reply:
    """One streamed request as the client saw it."""

    tokens: int
    ttft: float  # request sent -> first token, s
    inter: list[float]  # gaps between tokens, s
    server_ttft: float | None = None  # the server's own TTFT, s, where it reports one


async def drive(
    streams: int,
    rounds: int,
    ramp: float,
    request: Callable[[str], Awaitable[Reply]],
    counter: Callable[[], Awaitable[float]],
) -> Load:
    """The load every server gets: three warm-up requests (the first ones after start-up run
    slower), then ``streams`` clients each sending ``rounds`` requests one after the other. With
    ``ramp`` = 0 all start at once (a burst) and throughput is tokens over the whole run; otherwise
    client k starts at k * ramp / streams, only the requests sent after the ramp are measured
    (steady state, arrivals spread out) and throughput is read from ``counter`` over the window
    where every stream runs."""
    load = Load()
    texts = prompts(streams * rounds)
    for text in prompts(3):
        await request(text)
    origin = time.perf_counter()
    done: list[float] = []
    first_done = asyncio.Event()

    async def one_stream(k: int) -> None:
        await asyncio.sleep(k * ramp / streams)
        for r in range(rounds):
            sent = time.perf_counter()
            reply = await request(texts[k * rounds + r])
            if not ramp:
                load.tokens += reply.tokens
            if sent - origin >= ramp:
                load.ttft.append(reply.ttft)
                load.inter.extend(reply.inter)
                load.per_request.append(reply.tokens)
                if reply.server_ttft is not None:
                    load.server_ttft.append(reply.server_ttft)
        done.append(time.perf_counter())
        first_done.set()

    async def window() -> None:
        load.tokens, load.wall = await counter_window(counter, ramp, first_done)

    if ramp:
        await asyncio.gather(window(), *(one_stream(k) for k in range(streams)))
    else:
        await asyncio.gather(*(one_stream(k) for k in range(streams)))
        load.wall = max(done) - origin
    return load


async def service_load(service: Service, streams: int, tokens: int, rounds: int, ramp: float = 0.0) -> Load:
    """:func:`drive` against ragraph's LLM service: V2 streams (MLServer form), the window read
    from the service's generated-tokens counter."""
    from ragraph_client.client import AsyncInferenceClient

    params = {"max_tokens": tokens, "temperature": "0"}
    async with AsyncInferenceClient(service.grpc_url, timeout=600, float_params="string") as client:

        async def request(text: str) -> Reply:
            sent = time.perf_counter()
            last, ttft, inter = sent, 0.0, []
            async for response in client.stream("llm", {"messages": [messages(text)]}, params, style="mlserver"):
                now = time.perf_counter()
                if "completion_tokens" in response.parameters:
                    server_ttft = float(response.parameters["ttft_ms"]) / 1e3
                    return Reply(int(response.parameters["completion_tokens"]), ttft, inter, server_ttft)
                if last == sent:
                    ttft = now - sent
                else:
                    inter.append(now - last)
                last = now
            raise RuntimeError("the stream ended without its final response")

        async def counter() -> float:
            return await asyncio.to_thread(service.metric, "ragraph_llm_generated_tokens_total")

        return await drive(streams, rounds, ramp, request, counter)


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
