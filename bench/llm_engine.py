"""The LLM engine alone (in process, no gRPC): aggregate tok/s and TTFT with N concurrent
streams, and where the engine thread's time goes (prefill and decode steps, reaping rows).

    python bench/llm_engine.py [--streams 16] [--rounds 6] [--tokens 32] [--steps mixed,alternating]

Streams start spread over ``--ramp`` seconds (steady state) and each sends ``--rounds`` requests
one after the other; tok/s is the engine's token counter over the window where every stream runs.
Compare with bench/llm.py's service figures to see what the transport costs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from llm_load import counter_window, prompts  # noqa: E402
from ragraph_llm.engine import Engine  # noqa: E402
from ragraph_llm.engine.alternating import AlternatingStepper  # noqa: E402
from ragraph_llm.engine.mixed import MixedStepper  # noqa: E402

from tests.fixtures.tiny_llm import build_tiny_llm  # noqa: E402

# phase -> (class, method, rows a call handles)
STEPS: dict[str, tuple[type, str, Callable[..., int]]] = {
    "_mixed_step": (MixedStepper, "run", lambda self, plan, running: len(plan.prefill) + len(running)),
    "_prefill": (AlternatingStepper, "_prefill", lambda self, new: len(new)),
    "_decode": (AlternatingStepper, "_decode", lambda self, running: len(running)),
    "_reap": (Engine, "_reap", lambda self: len(self._running)),
}


def time_steps() -> dict[str, list[float]]:
    """Wrap the engine's step phases to record (calls, seconds, rows)."""
    stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0])
    for name, (owner, method, rows_of) in STEPS.items():
        original = getattr(owner, method)

        def timed(
            self: Any,
            *args: Any,
            _original: Callable[..., Any] = original,
            _name: str = name,
            _rows: Callable[..., int] = rows_of,
        ) -> Any:
            rows = _rows(self, *args)
            start = time.perf_counter()
            result = _original(self, *args)
            entry = stats[_name]
            entry[0] += 1
            entry[1] += time.perf_counter() - start
            entry[2] += rows
            return result

        setattr(owner, method, timed)
    return stats


async def run(
    engine: Any, ids: list[list[int]], streams: int, rounds: int, ramp: float, tokens: int
) -> tuple[float, float]:
    from ragraph_llm.engine import SamplingParams

    ttfts: list[float] = []
    first_done = asyncio.Event()
    origin = time.perf_counter()
    window: dict[str, float] = {}

    async def one(k: int) -> None:
        await asyncio.sleep(k * ramp / streams)
        for r in range(rounds):
            sent, first = time.perf_counter(), 0.0
            async for event in engine.generate(
                ids[(k * rounds + r) % len(ids)], SamplingParams(max_tokens=tokens, temperature=0)
            ):
                first = first or time.perf_counter() - sent
                if event.finish_reason:
                    if sent - origin >= ramp:
                        ttfts.append(first)
                    break
        first_done.set()

    async def measure() -> None:
        async def read() -> float:
            return float(engine.metrics.tokens._value.get())

        tokens, seconds = await counter_window(read, ramp, first_done)
        window["rate"] = tokens / seconds

    await asyncio.gather(measure(), *(one(k) for k in range(streams)))
    return window["rate"], statistics.median(ttfts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--ramp", type=float, default=0.6, help="seconds over which the streams start")
    parser.add_argument(
        "--steps",
        default="mixed,alternating",
        help="engine step kinds to compare, comma-separated: mixed (decode and prefill in one pass), alternating",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each step kind, interleaved")
    args = parser.parse_args()
    from ragraph_llm.model import LanguageModel
    from ragraph_llm.settings import LLMSettings

    model_dir = build_tiny_llm(Path(tempfile.gettempdir()) / "ragraph-bench-bench", kind="bench")
    settings = LLMSettings(model=str(model_dir), device="cpu", max_batch_size=args.streams)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = [tokenizer(text)["input_ids"] for text in prompts(200)]
    stats = time_steps()
    kinds = args.steps.split(",")
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    phases: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.repeat):
        for kind in kinds:
            engine = Engine(
                lambda: LanguageModel(settings),
                settings.max_batch_size,
                1024,
                settings.max_batch_time_ms,
                max_prefill_tokens=settings.max_prefill_tokens,
                mixed_steps=kind == "mixed",
            )
            try:
                asyncio.run(run(engine, ids, 1, 2, 0.0, args.tokens))  # warm-up
                stats.clear()
                rate, ttft = asyncio.run(run(engine, ids, args.streams, args.rounds, args.ramp, args.tokens))
            finally:
                engine.close()
            results[kind].append((rate, ttft))
            phases[kind] = {name: list(entry) for name, entry in stats.items()}
            print(f"  {kind} steps: {rate:.1f} tok/s, TTFT p50 {ttft * 1e3:.1f} ms", flush=True)
    print(f"\nengine alone, {args.streams} streams, steady state, median of {args.repeat} interleaved runs:")
    print("| steps | tok/s | TTFT p50 ms |\n|---|---:|---:|")
    for kind in kinds:
        rate = statistics.median(r for r, _ in results[kind])
        ttft = statistics.median(t for _, t in results[kind])
        print(f"| {kind} | {rate:.1f} | {ttft * 1e3:.1f} |")
    print("\nwhere the engine thread's time goes (last run of each):")
    print("| steps | phase | calls | ms per call | rows per call | share of engine time |")
    print("|---|---|---:|---:|---:|---:|")
    for kind in kinds:
        total = sum(entry[1] for entry in phases[kind].values())
        for name in STEPS:
            if name not in phases[kind]:
                continue
            calls, seconds, rows = phases[kind][name]
            print(
                f"| {kind} | {name.lstrip('_')} | {calls:.0f} | {1e3 * seconds / max(calls, 1):.2f} | "
                f"{rows / max(calls, 1):.1f} | {seconds / total:.0%} |"
            )


if __name__ == "__main__":
    main()
