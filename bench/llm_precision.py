"""Greedy agreement of the LLM's CPU weight formats with float32 on the real model: float32,
bfloat16, and bfloat16 with 4-bit weights (``ragraph_llm.int4``), plain ``generate`` each, on the
same chat-templated prompts. Prints, per format: sequences identical to float32, mean tokens before the first
difference, the time of one greedy request, and (for 4-bit) how far the 4-bit grid is from the
loaded float32 weights (0 for a Q4 GGUF: its own codes come back).

    python bench/llm_precision.py [--model FILE.gguf|DIR] [--prompts 48] [--tokens 32]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.llm import bundled_gguf, chat_ids, load_model  # noqa: E402
from bench.llm_load import prompts  # noqa: E402


def generate_all(model: object, tokenizer: object, texts: list[str], tokens: int) -> tuple[list[list[int]], float]:
    import torch

    outputs, elapsed = [], 0.0
    with torch.inference_mode():
        for text in texts:
            ids = chat_ids(tokenizer, text, "cpu")
            start = time.perf_counter()
            out = model.generate(**ids, max_new_tokens=tokens, do_sample=False)  # type: ignore[attr-defined]
            elapsed += time.perf_counter() - start
            outputs.append(out[0, ids["input_ids"].shape[1] :].tolist())
    return outputs, elapsed / len(texts)


def grid_error(model: object) -> float:
    """Largest |w - 4-bit grid(w)| over the layers ``int4`` would quantize (the head is kept)."""
    from ragraph_llm import int4

    head = model.get_output_embeddings()  # type: ignore[attr-defined]
    layers = [m for m in model.modules() if int4.eligible(m) and m is not head]  # type: ignore[attr-defined]
    return max((int4.grid_error(m.weight) for m in layers), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .gguf file or a model directory (default: the bundled SmolLM2 GGUF)")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    import torch
    from ragraph_llm import int4

    model_path = args.model or bundled_gguf()
    texts = prompts(args.prompts)
    base, tokenizer = load_model(model_path, "cpu")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; model {model_path}")
    print(f"4-bit grid vs the loaded float32 weights: max |difference| {grid_error(base):.2e}")
    reference, ref_time = generate_all(base, tokenizer, texts, args.tokens)
    rows = [("float32", reference, ref_time)]
    bf16 = copy.deepcopy(base).to(torch.bfloat16)
    rows.append(("bfloat16", *generate_all(bf16, tokenizer, texts, args.tokens)))
    if int4.available():
        int4.quantize_linears(bf16)
        rows.append(("bfloat16, 4-bit weights", *generate_all(bf16, tokenizer, texts, args.tokens)))
    print(f"\n{args.prompts} prompts, {args.tokens} greedy tokens each\n")
    print("| weights | identical to float32 | tokens before first difference, mean | tokens, mean | ms per request |")
    print("|---|---:|---:|---:|---:|")
    for name, outputs, seconds in rows:
        same = sum(o == r for o, r in zip(outputs, reference, strict=True))
        prefix = []
        for o, r in zip(outputs, reference, strict=True):
            n = next((i for i, (a, b) in enumerate(zip(o, r, strict=False)) if a != b), min(len(o), len(r)))
            prefix.append(n)
        length = statistics.mean(len(o) for o in outputs)
        print(f"| {name} | {same}/{len(texts)} | {statistics.mean(prefix):.1f} | {length:.1f} | {seconds * 1e3:.0f} |")


if __name__ == "__main__":
    main()
