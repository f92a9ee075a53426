"""llama.cpp as the anchor of bench/llm.py: the same GGUF file served by llama.cpp, loaded with the
same prompts, token counts and concurrency, greedy, measured the same way.

Two servers a CPU user would pick:

- ``llama-server``, llama.cpp's own HTTP server: continuous batching over ``--parallel`` slots.
  Build it once from the llama.cpp source that the ``bench`` extra's llama-cpp-python ships
  (``bench/build_llama_server.sh``), or pass any build with ``--llama-server PATH``.
- ``python -m llama_cpp.server`` from ``llama-cpp-python[server]`` (the ``bench`` extra): one
  request at a time, the way that server runs them (with ``--interrupt_requests False``: by
  default a new request cuts off the one streaming).

Both are driven through their OpenAI-compatible ``/v1/chat/completions`` stream with the prompt as
a one-turn chat (the GGUF's own chat template): one SSE chunk per token; TTFT is request sent ->
first chunk with content, inter-token the gaps between chunks.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.llm_load import Load, counter_window, prompts  # noqa: E402
from tests.fixtures.servers import free_port, stop_process  # noqa: E402

DEFAULT_BINARY = REPO / "bench" / ".llama.cpp" / "build" / "bin" / "llama-server"


@dataclass
class LlamaServer:
    """One llama.cpp server process and what it serves."""

    process: subprocess.Popen[bytes]
    port: int
    label: str
    log_path: Path
    counted: int = 0  # tokens streamed to clients so far (the window's counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.process, 15)


def find_llama_server(path: str | None) -> Path | None:
    """The llama-server binary: ``path``, the bench's own build, or one on PATH."""
    for candidate in (path, str(DEFAULT_BINARY), shutil.which("llama-server")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def start_llama_server(binary: Path, gguf: str, slots: int, threads: int, log_path: Path) -> LlamaServer:
    """llama-server with ``slots`` parallel sequences (continuous batching, its default) and a
    512-token context per slot, on ``threads`` threads."""
    port = free_port()
    command = [
        str(binary),
        "--model",
        gguf,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--parallel",
        str(slots),
        "--ctx-size",
        str(512 * slots),
        "--threads",
        str(threads),
        "--threads-batch",
        str(threads),
        "--cont-batching",
        "--jinja",
        "--no-webui",
    ]
    process = subprocess.Popen(command, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    server = LlamaServer(process, port, f"llama.cpp llama-server, {slots} slots", log_path)
    _wait_ready(server)
    return server


def start_llama_cpp_python(gguf: str, threads: int, log_path: Path) -> LlamaServer:
    """llama-cpp-python's OpenAI server (the ``bench`` extra): it runs one request at a time."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        gguf,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--n_ctx",
        "2048",
        "--interrupt_requests",  # its default: a new request cuts the one streaming
        "False",
    ]
    process = subprocess.Popen(command, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    server = LlamaServer(process, port, "llama-cpp-python server", log_path)
    _wait_ready(server)
    return server


def _wait_ready(server: LlamaServer, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.label} exited: see {server.log_path}")
        try:
            with urllib.request.urlopen(f"{server.url}/v1/models", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{server.label} not ready after {timeout:.0f} s: see {server.log_path}")


async def _one_request(client: object, server: LlamaServer, text: str, tokens: int) -> tuple[int, float, list[float]]:
    """Stream one completion: (tokens received, TTFT s, inter-token gaps s)."""
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    chat = [{"role": "user", "content": text}]
    body = {"messages": chat, "max_tokens": tokens, "temperature": 0.0, "stream": True}
    sent = time.perf_counter()
    last, ttft, inter, count = sent, 0.0, [], 0
    async with client.stream("POST", f"{server.url}/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or []
            if not choices or not (choices[0].get("delta") or {}).get("content"):
                continue
            now = time.perf_counter()
            count += 1
            server.counted += 1
            if last == sent:
                ttft = now - sent
            else:
                inter.append(now - last)
            last = now
    return count, ttft, inter


async def llama_load(server: LlamaServer, streams: int, tokens: int, rounds: int, ramp: float = 0.0) -> Load:
    """bench/llm.py's ``service_load`` against a llama.cpp server: ``streams`` clients, ``rounds``
    requests each; a burst with ``ramp`` = 0, else starts spread over ``ramp`` s and only the
    requests sent after it measured, throughput read over the window where all streams run."""
    import httpx

    load = Load()
    texts = prompts(streams * rounds)
    # a new connection per request: llama-server closes a streamed response's connection, and a
    # pooled one would be reused after that
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        for text in prompts(3):  # warm-up, as for the service
            await _one_request(client, server, text, tokens)
        origin = time.perf_counter()
        done: list[float] = []
        first_done = asyncio.Event()

        async def one_stream(k: int) -> None:
            await asyncio.sleep(k * ramp / streams)
            for r in range(rounds):
                sent = time.perf_counter()
                count, ttft, inter = await _one_request(client, server, texts[k * rounds + r], tokens)
                if not ramp:
                    load.tokens += count
                if sent - origin >= ramp:
                    load.ttft.append(ttft)
                    load.inter.extend(inter)
                    load.per_request.append(count)
            done.append(time.perf_counter())
            first_done.set()

        async def counted() -> float:
            return float(server.counted)

        async def window() -> None:
            load.tokens, load.wall = await counter_window(counted, ramp, first_done)

        if ramp:
            await asyncio.gather(window(), *(one_stream(k) for k in range(streams)))
        else:
            await asyncio.gather(*(one_stream(k) for k in range(streams)))
            load.wall = max(done) - origin
    return load
