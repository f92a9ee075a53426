"""How the LLM's linear layers hold their weights on CPU, chosen once at load.

A decode step reads every weight once, so on CPU its time is mostly the weights' bytes over
memory bandwidth, and what pays depends on the model and the machine (docs/benchmarks.md):

- ``dense``: ``nn.Linear`` as loaded (float32 by default: greedy output equal to ``generate``).
- ``packed``: the same weights reordered once for oneDNN (:mod:`ragraph_serving.packed`); faster
  for some models, slower for others (the bundled SmolLM2 lost 16%), same numbers within float32
  rounding. With ``auto`` the load times both on the model's own layers, at one row and at a full
  batch, and keeps the faster.
- ``int4``: 4-bit weights, bfloat16 activations (:mod:`ragraph_llm.int4`), about a seventh of
  float32's bytes. With ``auto`` it is chosen when the model's weights are 4-bit already (a Q4
  GGUF: its own codes are kept exactly), the CPU computes bfloat16 natively (AMX or AVX512-BF16)
  and ``dtype`` is ``auto``; its greedy output then differs from float32's on some requests
  (measured by bench/llm_precision.py). Ask for ``dense`` or ``packed`` to keep float32.

GPUs keep the dense layers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ragraph_client.errors import InvalidArgument
from ragraph_serving.packed import pack_linears
from torch import nn

from . import int4

log = logging.getLogger("ragraph.llm.weights")

FORMATS = ("auto", "dense", "packed", "int4")
SAMPLE_LAYERS = 8  # linear layers checked for a 4-bit grid (the first decoder layer's)


@dataclass
class WeightChoice:
    """What the load chose, and why (logged, and shown in the service's banner)."""

    format: str
    dtype: torch.dtype
    reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)


def cpu_computes_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AMX-BF16 or AVX512-BF16)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _linears(model: nn.Module) -> list[nn.Linear]:
    head = getattr(model, "get_output_embeddings", lambda: None)()
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m is not head]


def four_bit_weights(model: nn.Module) -> bool:
    """Whether the model's linear weights already lie on 4-bit grids of 32 (a Q4 GGUF's),
    checked on the first few layers."""
    sample = [m for m in _linears(model) if int4.eligible(m)][:SAMPLE_LAYERS]
    return bool(sample) and all(
        int4.grid_error(layer.weight) <= 1e-5 * float(layer.weight.detach().abs().max()) for layer in sample
    )


@torch.inference_mode()
def linear_time_ms(model: nn.Module, rows: int, dtype: torch.dtype, repeats: int = 3) -> float:
    """Milliseconds for every linear layer of ``model`` (head included) on ``rows`` input rows,
    one after the other as a step runs them: the weights come from memory, as in a step."""
    layers = [(m, int(getattr(m, "in_features", 0))) for m in model.modules() if hasattr(m, "in_features")]
    inputs = {n: torch.randn(rows, n, dtype=dtype) for n in {width for _, width in layers}}
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        for layer, width in layers:
            layer(inputs[width])
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def _restore(model: nn.Module, originals: dict[str, nn.Module]) -> None:
    for name, module in originals.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module)


def requested(settings: Any) -> str:
    """The format the settings ask for: ``weights``, or the older ``packed_weights`` when only
    that one is set; both set and disagreeing is an error."""
    legacy = settings.packed_weights
    if legacy is None:
        return str(settings.weights)
    implied = "packed" if legacy else "dense"
    if settings.weights not in ("auto", implied):
        raise InvalidArgument(
            f"packed_weights={str(legacy).lower()} asks for {implied} weights but weights is '{settings.weights}'"
        )
    return implied


def choose(model: nn.Module, device: torch.device, dtype_setting: str, weights: str, batch: int) -> WeightChoice:
    """Apply the weight format ``weights`` (one of :data:`FORMATS`) to ``model`` in place and say
    what was chosen. ``batch``: the most rows a step runs (the timing's full batch)."""
    if weights not in FORMATS:
        raise InvalidArgument(f"weights must be one of {', '.join(FORMATS)}, got '{weights}'")
    dtype = next(model.parameters()).dtype
    if device.type != "cpu":
        if weights not in ("auto", "dense"):
            raise InvalidArgument(f"weights '{weights}' is for CPU; on {device.type} the layers stay dense")
        return WeightChoice("dense", dtype, f"{device.type}: dense layers")
    if weights == "int4" or (weights == "auto" and dtype_setting == "auto" and _int4_pays(model)):
        if not int4.available():
            raise InvalidArgument("weights 'int4' needs torch's CPU 4-bit kernel, which this torch build lacks")
        if dtype_setting not in ("auto", "bfloat16"):
            raise InvalidArgument(
                f"weights 'int4' computes in bfloat16; dtype must be auto or bfloat16, not '{dtype_setting}'"
            )
        model.to(torch.bfloat16)
        int4.quantize_linears(model)
        reason = "asked for" if weights == "int4" else "4-bit weights in the file, bfloat16 on this CPU"
        return WeightChoice("int4", torch.bfloat16, reason)
    if weights == "dense":
        return WeightChoice("dense", dtype, "asked for")
    if weights == "packed":
        pack_linears(model, batch_hint=batch)
        return WeightChoice("packed", dtype, "asked for")
    timings = {f"dense, {rows} rows": linear_time_ms(model, rows, dtype) for rows in (1, batch)}
    originals = _linear_modules(model)
    if not pack_linears(model, batch_hint=batch):
        return WeightChoice("dense", dtype, "no oneDNN linear ops in this torch build", timings)
    timings |= {f"packed, {rows} rows": linear_time_ms(model, rows, dtype) for rows in (1, batch)}
    dense = timings["dense, 1 rows"] + timings[f"dense, {batch} rows"]
    packed = timings["packed, 1 rows"] + timings[f"packed, {batch} rows"]
    if packed < dense:
        return WeightChoice("packed", dtype, f"timed: {packed:.1f} ms vs dense {dense:.1f} ms", timings)
    _restore(model, originals)
    return WeightChoice("dense", dtype, f"timed: {dense:.1f} ms vs packed {packed:.1f} ms", timings)


def _int4_pays(model: nn.Module) -> bool:
    return int4.available() and cpu_computes_bf16() and four_bit_weights(model)


def describe(choice: WeightChoice) -> str:
    timings = ", ".join(f"{k} {v:.1f} ms" for k, v in choice.timings_ms.items())
    return f"weights {choice.format} ({str(choice.dtype).removeprefix('torch.')}): {choice.reason}" + (
        f" [{timings}]" if timings else ""
    )


def log_choice(choice: WeightChoice) -> None:
    log.info("%s", describe(choice))
