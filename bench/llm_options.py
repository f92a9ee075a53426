"""Model-level optimisations for the LLM on this machine, side by side in one run: forward-pass
cost of a decode step (1 and 16 rows) and of a prefill (4 prompts of ~31 tokens), and whether
greedy decoding still gives plain float32 ``generate``'s tokens.

    python bench/llm_options.py [--variants plain,packed,int8,bf16,compile,eager] [--repeat 3]

Variants (each a fresh copy of the bench Llama):
- plain:   float32, PyTorch's GEMM, SDPA attention (transformers' defaults);
- packed:  float32 with linear weights packed for oneDNN (what the service does on CPU);
- int8:    ``torch.ao.quantization.quantize_dynamic`` on every linear layer (int8 weights,
           activations quantised per call);
- bf16:    bfloat16 weights and activations, packed (the CPU has AVX512-BF16);
- compile: ``torch.compile`` (inductor, dynamic shapes) of the plain model;
- eager:   float32, packed, transformers' eager attention instead of SDPA.
Steps run in rounds, variants interleaved; the table gives each variant's median over rounds.
"""

from __future__ import annotations

import argparse
import copy
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

from llm import prompts  # noqa: E402

from tests.fixtures.tiny_llm import build_tiny_llm  # noqa: E402

VARIANTS = ("plain", "packed", "int8", "bf16", "compile", "eager")


def build(variant: str, base: Any) -> tuple[Any, float]:
    """The variant's model and the seconds its preparation took (compile: measured at first use)."""
    import torch
    from ragraph_serving.packed import pack_linears

    start = time.perf_counter()
    model = copy.deepcopy(base)
    if variant == "packed":
        pack_linears(model)
    elif variant == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif variant == "bf16":
        model = model.to(torch.bfloat16)
        pack_linears(model)
    elif variant == "compile":
        model.forward = torch.compile(model.forward, dynamic=True)
    elif variant == "eager":
        model.set_attn_implementation("eager")
        pack_linears(model)
    return model, time.perf_counter() - start


def timed(fn: Callable[[], Any], repeat: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_costs(model: Any, ids: list[list[int]]) -> dict[str, float]:
    """ms per forward: decode with 1 and 16 rows over a 48-column cache, prefill of 4 prompts."""
    import torch
    from transformers import DynamicCache

    out: dict[str, float] = {}
    for rows in (1, 16):
        prompt = torch.tensor([ids[i][:24] for i in range(rows)])
        cache = DynamicCache(config=model.config)
        model(input_ids=prompt, past_key_values=cache, use_cache=True)
        token = torch.full((rows, 1), 5)

        def decode(cache: Any = cache, token: torch.Tensor = token) -> None:
            model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache.crop(-1)  # the same cache length at every call

        out[f"decode {rows}"] = timed(decode) * 1e3
    width = max(len(p) for p in ids[:4])
    batch = torch.tensor([[0] * (width - len(p)) + p for p in ids[:4]])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in ids[:4]])[:, None]).long()
    out["prefill 4"] = timed(lambda: model(input_ids=batch, attention_mask=mask, logits_to_keep=1)) * 1e3
    return out


def greedy(model: Any, ids: list[list[int]], tokens: int) -> list[list[int]]:
    import torch

    outs = []
    for prompt in ids:
        x = torch.tensor([prompt])
        y = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
        )
        outs.append([int(t) for t in y[0, len(prompt) :]])
    return outs


def agreement(got: list[list[int]], reference: list[list[int]]) -> float:
    """Share of generated tokens before each sequence's first divergence from the reference."""
    same = 0
    for a, b in zip(got, reference, strict=True):
        for x, y in zip(a, b, strict=True):
            if x != y:
                break
            same += 1
    return same / sum(len(r) for r in reference)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=3, help="rounds of step timings, variants interleaved")
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model_dir = build_tiny_llm(Path(tempfile.gettempdir()) / "ragraph-bench-bench", kind="bench")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    ids = [list(tokenizer(text)["input_ids"]) for text in prompts(16)]
    variants = args.variants.split(",")
    with torch.inference_mode():
        reference = greedy(base, ids[:8], args.tokens)
        models, prepared, agree = {}, {}, {}
        for variant in variants:
            models[variant], prepared[variant] = build(variant, base)
            start = time.perf_counter()
            agree[variant] = agreement(greedy(models[variant], ids[:8], args.tokens), reference)
            if variant == "compile":
                prepared[variant] += time.perf_counter() - start  # compiling happens in the first calls
            print(f"  {variant}: ready in {prepared[variant]:.1f} s, greedy agreement {agree[variant]:.0%}", flush=True)
        costs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for _ in range(args.repeat):
            for variant in variants:
                costs[variant].append(step_costs(models[variant], ids))
    keys = ["decode 1", "decode 16", "prefill 4"]
    print(
        f"\nforward-pass ms (median of {args.repeat} interleaved rounds); greedy agreement with float32 "
        f"`generate` over 8 prompts x {args.tokens} tokens"
    )
    print(
        "| variant | decode, 1 row | decode, 16 rows | prefill, 4 x ~31 tokens | vs plain (16 rows) | "
        "greedy agreement | set-up s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    plain16 = statistics.median(c["decode 16"] for c in costs.get("plain", costs[variants[0]]))
    for variant in variants:
        med = {k: statistics.median(c[k] for c in costs[variant]) for k in keys}
        print(
            f"| {variant} | {med['decode 1']:.2f} | {med['decode 16']:.2f} | {med['prefill 4']:.2f} | "
            f"{plain16 / med['decode 16']:.2f}x | {agree[variant]:.0%} | {prepared[variant]:.1f} |"
        )


if __name__ == "__main__":
    main()
