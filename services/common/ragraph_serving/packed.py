"""Linear layers with weights packed for oneDNN, on CPU.

PyTorch runs ``nn.Linear`` on CPU through a BLAS GEMM that reads the weight in its plain
row-major layout at every call. oneDNN can reorder a weight once into the blocked layout its
kernels read fastest (what ``torch.compile`` does on CPU with weight prepacking and freezing).
Measured on this project's 2-core VM (docs/benchmarks.md): the LLM bench model's 42 linear
layers take 3.5 instead of 6.2 ms at one token, 4.7 instead of 9.2 ms at 16 and 10.0 instead of
16.1 ms at 47; all-MiniLM-L6-v2 encodes 11-19% more sentences per second at batch 32-128 and
about twice as many one at a time. float32 results stay within rounding of the plain GEMM. Each
layer is checked against ``F.linear`` when it is packed; a layer that fails the check, or a build
of torch without the oneDNN ops, keeps the plain path.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger("ragraph.llm.packed")

_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward with the weight reordered once for oneDNN."""

    def __init__(self, linear: nn.Linear, batch_hint: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


def _agrees(packed: PackedLinear, linear: nn.Linear) -> bool:
    x = torch.randn(3, linear.in_features, dtype=linear.weight.dtype)
    expected = nn.functional.linear(x, linear.weight, linear.bias).float()
    got = packed(x).float()
    scale = float(expected.abs().max().clamp(min=1.0))
    return float((got - expected).abs().max()) <= _TOLERANCE[linear.weight.dtype] * scale


@torch.inference_mode()
def pack_linears(model: Any, batch_hint: int = 16) -> int:
    """Swap ``model``'s CPU linear layers (float32 or bfloat16) for packed ones; returns how many
    were swapped. Tied weights (an LM head sharing the embedding) are packed as a copy."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        log.info("packed linear layers: off (this torch build has no oneDNN linear ops)")
        return 0
    swapped = kept = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or child.weight.device.type != "cpu":
                continue
            if child.weight.dtype not in _TOLERANCE:
                kept += 1
                continue
            try:
                packed = PackedLinear(child, batch_hint)
                ok = _agrees(packed, child)
            except RuntimeError as exc:
                log.info("packed linear layers: %s kept plain (%s)", name, exc)
                ok = False
            if ok:
                setattr(parent, name, packed)
                swapped += 1
            else:
                kept += 1
    log.info("packed linear layers: %d packed for oneDNN, %d kept plain", swapped, kept)
    return swapped
