"""Encoder throughput: in-process ``encode`` at its best batch size vs the V2 service under 1, 8
and 32 concurrent single-sentence clients, measured side by side in one run.

    python bench/encoder.py [--seconds 6] [--rounds 3] [--batch-time-ms 2 --batch-time-ms 0 ...] [--threads N]

The best in-process batch size is picked first; then in-process runs at that size (plain
sentence-transformers, and with the linear weights packed as the service packs them on CPU) and
service runs alternate for ``--rounds`` rounds. Prints a markdown table (median sentences/s and
the median of each round's ratio to each in-process figure). ``--threads N`` gives torch N threads
on both sides (OMP_NUM_THREADS, set before torch loads); on a small machine, fewer threads than
cores leaves the service's event loop and the clients a core of their own (docs/benchmarks.md).
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
from pathlib import Path
from typing import Any

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


def in_process_rate(encoder: Any, texts: list[str], batch: int, seconds: float) -> float:
    encoder.encode_sync(texts[:batch])  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        encoder.encode_sync(texts[done % 3000 : done % 3000 + batch])
        done += batch
    return done / (time.perf_counter() - start)


def best_batch(encoder: Any, texts: list[str], seconds: float) -> int:
    rates = {}
    for batch in (1, 8, 32, 64, 128):
        rates[batch] = in_process_rate(encoder, texts, batch, seconds)
        print(f"  in-process batch {batch:>3}: {rates[batch]:8.1f} sentences/s", flush=True)
    return max(rates, key=lambda b: rates[b])


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


Measured = dict[str, tuple[list[float], list[float], list[float]]]  # label -> rates, ratios, ratios to packed


def record(measured: Measured, label: str, rate: float, base: float, packed: float) -> None:
    rates, ratios, packed_ratios = measured.setdefault(label, ([], [], []))
    rates.append(rate)
    ratios.append(rate / base)
    packed_ratios.append(rate / packed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3, help="in-process/service rounds, alternated")
    parser.add_argument("--batch-time-ms", type=float, action="append", help="service max_batch_time_ms to try")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch threads, in process and in the service (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by libgomp when torch loads; the service inherits it
    import torch
    from ragraph_encoder.model import Encoder
    from ragraph_encoder.settings import EncoderSettings

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads"
    )
    # in-process baselines: plain sentence-transformers, and with the weights packed as the service packs them
    encoder = Encoder(EncoderSettings(device="cpu", packed_weights=False))
    packed_encoder = Encoder(EncoderSettings(device="cpu"))
    texts = sentences(4096)
    batch = best_batch(encoder, texts, args.seconds)
    rows: list[tuple[str, list[float], list[float], list[float]]] = []
    for batch_time in args.batch_time_ms or [2.0]:
        os.environ["RAGRAPH_ENCODER_MAX_BATCH_TIME_MS"] = str(batch_time)
        os.environ["RAGRAPH_ENCODER_MAX_BATCH_SIZE"] = str(args.max_batch_size)
        log = Path(tempfile.mkdtemp()) / "encoder.log"
        service = start_service(["encoder", "--device", "cpu"], log, ["encoder", "classifier"])  # both loaded: idle
        measured: Measured = {}
        try:
            # In-process and service runs alternate, so drift on a noisy machine hits both alike;
            # each round's ratio compares runs seconds apart.
            for r in range(args.rounds):
                base = in_process_rate(encoder, texts, batch, args.seconds)
                packed = in_process_rate(packed_encoder, texts, batch, args.seconds)
                print(
                    f"  round {r + 1}: in-process batch {batch}: {base:8.1f} sentences/s, packed weights {packed:8.1f}",
                    flush=True,
                )
                record(measured, f"in-process encode, batch {batch}", base, base, packed)
                record(measured, f"in-process encode, batch {batch}, packed weights", packed, base, packed)
                for clients in (1, 8, 32):
                    rate = asyncio.run(service_rate(service.grpc_url, clients, args.seconds))
                    label = f"service, {clients} clients (batch time {batch_time:g} ms, max {args.max_batch_size})"
                    print(
                        f"  round {r + 1}: {label}: {rate:8.1f} sentences/s ({rate / base:.2f}; "
                        f"{rate / packed:.2f} of packed)",
                        flush=True,
                    )
                    record(measured, label, rate, base, packed)
        finally:
            service.stop()
        rows += [(label, *values) for label, values in measured.items()]
    print(
        f"\n| setup | sentences/s (median of {args.rounds}) | vs in-process (median, range) "
        "| vs in-process with packed weights (median, range) |"
    )
    print("|---|---:|---:|---:|")
    for label, rates, ratios, packed_ratios in rows:
        print(
            f"| {label} | {statistics.median(rates):.1f} | {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}–{max(ratios):.2f}) | {statistics.median(packed_ratios):.2f} "
            f"({min(packed_ratios):.2f}–{max(packed_ratios):.2f}) |"
        )


if __name__ == "__main__":
    main()
