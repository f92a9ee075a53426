"""4-bit weight-only linear layers on CPU: torch's ``_weight_int4pack_mm_for_cpu`` kernel.

A decode step on CPU reads every weight once, so its time is the weights' bytes over memory
bandwidth: float32 SmolLM2-135M is ~540 MB a step, bfloat16 half that, 4-bit with a scale and a
zero point per 32 weights ~0.75 byte a weight. Each layer's weight is quantized per output row
in groups of ``group_size`` along the input: scale = (max - min) / 15, zero = min. A GGUF Q4_1
tensor is exactly that grid (its blocks of 32 hold 4-bit codes, a scale and a minimum), so
converting weights dequantized from such a file gives back the file's own codes: nothing is lost
but the scales' rounding to bfloat16. Other weights lose what 4-bit quantization loses.

The kernel wants bfloat16 activations: a model served this way runs in bfloat16 with these
layers in place of its ``nn.Linear`` ones (the output head stays dense). Each row of the output
depends only on its own input row (checked in the unit tests for 1..64 rows), so a sequence's
tokens do not depend on what else is in the batch.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger("ragraph.llm.int4")

GROUP_SIZE = 32
KERNEL = "_weight_int4pack_mm_for_cpu"


def available() -> bool:
    """Whether this torch build has the CPU 4-bit kernel."""
    return hasattr(torch.ops.aten, KERNEL) and hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


def quantize(weight: torch.Tensor, group_size: int = GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes int32 [N, K] in 0..15, scale [N, K/g], zero [N, K/g]) with weight ~= codes * scale + zero.

    A group whose values already lie on a grid of at most 16 evenly spaced levels (weights
    dequantized from a 4-bit file) keeps that grid exactly: its step is the smallest gap between
    its values. Any other group gets scale = (max - min) / 15, zero = min."""
    rows, cols = weight.shape
    groups = weight.detach().float().reshape(rows, cols // group_size, group_size)
    ordered = groups.sort(dim=-1).values
    low, high = ordered[..., 0], ordered[..., -1]
    tolerance = (high - low) * 1e-4
    gaps = ordered[..., 1:] - ordered[..., :-1]
    step = torch.where(gaps > tolerance[..., None], gaps, torch.full_like(gaps, torch.inf)).amin(dim=-1)
    finite = torch.isfinite(step)
    safe_step = torch.where(finite, step, torch.ones_like(step))
    codes = ((groups - low[..., None]) / safe_step[..., None]).round()
    on_grid = (codes * safe_step[..., None] + low[..., None] - groups).abs().amax(dim=-1) <= tolerance
    exact = finite & on_grid & (codes.amax(dim=-1) <= 15)
    scale = torch.where(exact, step, (high - low) / 15)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = ((groups - low[..., None]) / safe[..., None]).round().clamp(0, 15).to(torch.int32)
    return codes.reshape(rows, cols), scale, low


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The float32 weight that :func:`quantize`'s codes, scales and zeros stand for."""
    rows, cols = codes.shape
    groups = codes.float().reshape(rows, scale.shape[-1], -1)
    return (groups * scale[..., None] + zero[..., None]).reshape(rows, cols)


def grid_error(weight: torch.Tensor, group_size: int = GROUP_SIZE) -> float:
    """Largest |weight - its 4-bit grid|: 0 for a weight dequantized from a 4-bit file."""
    back = dequantize(*quantize(weight, group_size))
    return float((back - weight.detach().float()).abs().max())


class Int4Linear(nn.Module):
    """``nn.Linear`` with 4-bit group-quantized weights; input and output in bfloat16."""

    def __init__(self, linear: nn.Linear, group_size: int = GROUP_SIZE) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.group_size = group_size
        codes, scale, zero = quantize(linear.weight, group_size)
        self.packed = nn.Parameter(torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1), requires_grad=False)
        # the kernel's dequantization is (code - 8) * scale + zero_mid: zero_mid = zero + 8 * scale
        scales_zeros = torch.stack([scale, zero + 8 * scale], dim=-1).transpose(0, 1).contiguous()
        self.scales_zeros = nn.Parameter(scales_zeros.to(torch.bfloat16), requires_grad=False)
        bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_zeros)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


def eligible(module: nn.Module, group_size: int = GROUP_SIZE) -> bool:
    return (
        isinstance(module, nn.Linear)
        and module.in_features % group_size == 0
        and module.out_features % 16 == 0  # the packing's tile
    )


def quantize_linears(model: nn.Module, group_size: int = GROUP_SIZE, keep: tuple[str, ...] = ("lm_head",)) -> int:
    """Swap every eligible ``nn.Linear`` of ``model`` (already in bfloat16) for an
    :class:`Int4Linear`, except the modules named in ``keep`` (the output head, often tied to
    the embedding). Returns how many were swapped."""
    if not available():
        raise RuntimeError(f"this torch build has no aten.{KERNEL}")
    swapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if child_name in keep or full in keep or not eligible(child, group_size):
                continue
            setattr(module, child_name, Int4Linear(child, group_size))
            swapped += 1
    log.info("4-bit weights: %d linear layers quantized (group size %d)", swapped, group_size)
    return swapped
