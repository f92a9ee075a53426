"""ragraph_llm.int4: 4-bit group-quantized linear layers on torch's CPU kernel."""

from __future__ import annotations

import pytest
import torch
from ragraph_llm import int4
from torch import nn

pytestmark = pytest.mark.skipif(not int4.available(), reason="this torch build has no CPU 4-bit kernel")


def on_grid(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """A weight whose groups of 32 lie on 4-bit grids, as a Q4_1 GGUF tensor dequantizes to;
    each group uses a random subset of the 16 levels (not always the ends)."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(2, 14, (rows, cols // 32, 32), generator=gen).float()
    scale = torch.rand(rows, cols // 32, 1, generator=gen) * 0.01 + 1e-4
    zero = -torch.rand(rows, cols // 32, 1, generator=gen) * 0.05
    return (codes * scale + zero).reshape(rows, cols)


def test_a_weight_already_on_a_4bit_grid_comes_back_exactly() -> None:
    weight = on_grid(64, 128)
    codes, scale, zero = int4.quantize(weight)
    assert codes.dtype == torch.int32 and int(codes.min()) >= 0 and int(codes.max()) <= 15
    assert torch.allclose(int4.dequantize(codes, scale, zero), weight, rtol=0, atol=1e-6)


def test_any_other_weight_gets_min_max_groups_within_half_a_step() -> None:
    weight = torch.randn(32, 64)
    codes, scale, zero = int4.quantize(weight)
    error = (int4.dequantize(codes, scale, zero) - weight).abs().reshape(32, 2, 32)
    assert bool((error <= scale[..., None] / 2 + 1e-6).all())
    assert int(codes.max()) == 15 and int(codes.min()) == 0


def test_a_constant_group_does_not_divide_by_zero() -> None:
    weight = torch.full((16, 32), 0.25)
    codes, scale, zero = int4.quantize(weight)
    assert torch.equal(int4.dequantize(codes, scale, zero), weight)


def test_the_layer_matches_the_dense_layer_on_its_own_weights() -> None:
    dense = nn.Linear(128, 64, bias=True)
    with torch.no_grad():
        dense.weight.copy_(on_grid(64, 128, seed=1))
    layer = int4.Int4Linear(dense)
    x = torch.randn(3, 5, 128)
    out = layer(x)
    assert out.shape == (3, 5, 64) and out.dtype == torch.bfloat16
    with torch.no_grad():
        reference = nn.functional.linear(x, dense.weight, dense.bias)
    # bfloat16 activations and scales: a few parts in a thousand of the output's range
    assert float((out.float() - reference).abs().max()) < 2e-2 * float(reference.abs().max())


@pytest.mark.parametrize("shape", [(64, 128), (576, 576), (1536, 576)])
def test_each_output_row_depends_only_on_its_input_row(shape: tuple[int, int]) -> None:
    dense = nn.Linear(shape[1], shape[0], bias=False)
    layer = int4.Int4Linear(dense)
    x = torch.randn(64, shape[1])
    alone = layer(x[:1])[0]
    for rows in (2, 3, 7, 16, 17, 32, 64):
        assert torch.equal(layer(x[:rows])[0], alone), rows


def test_quantize_linears_keeps_the_output_head_and_skips_shapes_the_kernel_cannot_take() -> None:
    model = nn.Sequential()
    model.add_module("up", nn.Linear(64, 128))
    model.add_module("odd", nn.Linear(40, 64))  # 40 inputs: not a whole number of groups
    model.add_module("lm_head", nn.Linear(128, 64))
    model.to(torch.bfloat16)
    assert int4.quantize_linears(model) == 1
    assert isinstance(model.up, int4.Int4Linear)
    assert isinstance(model.odd, nn.Linear) and isinstance(model.lm_head, nn.Linear)
