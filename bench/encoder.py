"""Encoder throughput: in-process ``encode`` at its best batch size vs the V2 service under 1, 8
and 32 concurrent single-sentence clients, measured side by side in one run.

    python bench/encoder.py [--seconds 8] [--batch-time-ms 2 --batch-time-ms 0 ...]

Prints a markdown table (sentences/s and the ratio to in-process).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.fixtures.servers import start_service  # noqa: E402

SUBJECTS = ["The router", "A small model", "Our encoder", "The cluster", "Each request", "The vector store"]
VERBS = ["streams tokens to", "batches work for", "answers questions about", "retries calls to", "indexes text from"]
OBJECTS = ["the client", "a busy service", "the deployment", "many documents", "the nightly job", "its users"]


def sentences(n: int) -> list[str]:
    return [f"{SUBJECTS[i % 6]} {VERBS[(i // 6) % 5]} {OBJECTS[(i // 30) % 6]} in case {i}." for i in range(n)]


def in_process(seconds: float) -> tuple[int, float]:
    from ragraph_encoder.model import Encoder
    from ragraph_encoder.settings import EncoderSettings

    encoder = Encoder(EncoderSettings(device="cpu"))
    texts = sentences(4096)
    best = (0, 0.0)
    for batch in (1, 8, 32, 64, 128):
        encoder.encode_sync(texts[:batch])  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            encoder.encode_sync(texts[done % 3000 : done % 3000 + batch])
            done += batch
        rate = done / (time.perf_counter() - start)
        print(f"  in-process batch {batch:>3}: {rate:8.1f} sentences/s", flush=True)
        best = max(best, (batch, rate), key=lambda x: x[1])
    return best


async def service_rate(url: str, clients: int, seconds: float) -> float:
    from ragraph_client.client import AsyncInferenceClient

    texts = sentences(4096)
    count = 0
    async with AsyncInferenceClient(url, timeout=60) as client:
        await client.infer("encoder", {"text": texts[:1]})  # warm-up
        stop = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal count
            i = k
            while time.perf_counter() < stop:
                await client.infer("encoder", {"text": [texts[i % 4096]]})
                count += 1
                i += clients

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch-time-ms", type=float, action="append", help="service max_batch_time_ms to try")
    parser.add_argument("--max-batch-size", type=int, default=32)
    args = parser.parse_args()
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    best_batch, best_rate = in_process(args.seconds)
    rows = [(f"in-process encode, batch {best_batch}", best_rate)]
    for batch_time in args.batch_time_ms or [2.0]:
        os.environ["RAGRAPH_ENCODER_MAX_BATCH_TIME_MS"] = str(batch_time)
        os.environ["RAGRAPH_ENCODER_MAX_BATCH_SIZE"] = str(args.max_batch_size)
        log = Path(tempfile.mkdtemp()) / "encoder.log"
        service = start_service(["encoder", "--device", "cpu"], log, ["encoder"])
        try:
            for clients in (1, 8, 32):
                rate = asyncio.run(service_rate(service.grpc_url, clients, args.seconds))
                label = f"service, {clients} clients (batch time {batch_time:g} ms, max {args.max_batch_size})"
                print(f"  {label}: {rate:8.1f} sentences/s", flush=True)
                rows.append((label, rate))
        finally:
            service.stop()
    print("\n| setup | sentences/s | vs in-process |\n|---|---:|---:|")
    for label, rate in rows:
        print(f"| {label} | {rate:.1f} | {rate / best_rate:.2f} |")


if __name__ == "__main__":
    main()
