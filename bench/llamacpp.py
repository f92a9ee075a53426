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

from bench.llm_load import Load, Reply, drive  # noqa: E402
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


def _launch(program: list[str], gguf: str, options: list[str], label: str, log_path: Path) -> LlamaServer:
    """``program`` serving ``gguf`` on a free loopback port with ``options``; returns once ready."""
    port = free_port()
    command = [*program, "--model", gguf, "--host", "127.0.0.1", "--port", str(port), *options]
    process = subprocess.Popen(command, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    server = LlamaServer(process, port, label, log_path)
    _wait_ready(server)
    return server


def start_llama_server(binary: Path, gguf: str, slots: int, threads: int, log_path: Path) -> LlamaServer:
    """llama-server with ``slots`` parallel sequences (continuous batching, its default) and a
    512-token context per slot, on ``threads`` threads."""
    options = ["--parallel", str(slots), "--ctx-size", str(512 * slots), "--threads", str(threads)]
    options += ["--threads-batch", str(threads), "--cont-batching", "--jinja", "--no-webui"]
    return _launch([str(binary)], gguf, options, f"llama.cpp llama-server, {slots} slots", log_path)


def start_llama_cpp_python(gguf: str, threads: int, log_path: Path) -> LlamaServer:
    """llama-cpp-python's OpenAI server (the ``bench`` extra): it runs one request at a time.
    ``--interrupt_requests False``: by default a new request cuts off the one streaming."""
    options = ["--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "2048"]
    options += ["--interrupt_requests", "False"]
    return _launch([sys.executable, "-m", "llama_cpp.server"], gguf, options, "llama-cpp-python server", log_path)


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


async def _one_request(client: object, server: LlamaServer, text: str, tokens: int) -> Reply:
    """Stream one chat completion."""
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
    return Reply(count, ttft, inter)


async def llama_load(server: LlamaServer, streams: int, tokens: int, rounds: int, ramp: float = 0.0) -> Load:
    """bench/llm_load.py's :func:`drive` against a llama.cpp server, the window read from the
    tokens streamed to the clients."""
    import httpx

    # a new connection per request: llama-server closes a streamed response's connection, and a
    # pooled one would be reused after that
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def request(text: str) -> Reply:
            return await _one_request(client, server, text, tokens)

        async def counted() -> float:
            return float(server.counted)

        return await drive(streams, rounds, ramp, request, counted)
