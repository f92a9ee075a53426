"""ragraph_llm.weights: the weight format chosen at load."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ragraph_client.errors import InvalidArgument
from ragraph_llm import int4, weights
from ragraph_serving.packed import PackedLinear
from torch import nn


class Tiny(nn.Module):
    """Two layers and an output head, as a causal LM lays them out."""

    def __init__(self, on_grid: bool = False) -> None:
        super().__init__()
        self.up, self.down, self.lm_head = nn.Linear(64, 128), nn.Linear(128, 64), nn.Linear(64, 96)
        if on_grid:
            with torch.no_grad():
                for layer in (self.up, self.down):
                    codes, scale, zero = int4.quantize(layer.weight)
                    layer.weight.copy_(int4.dequantize(codes, scale, zero))

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.down(self.up(x)))


CPU = torch.device("cpu")


def test_the_older_packed_weights_setting_maps_to_a_format_and_conflicts_are_refused() -> None:
    def settings(w: str, packed: bool | None) -> SimpleNamespace:
        return SimpleNamespace(weights=w, packed_weights=packed)

    assert weights.requested(settings("auto", None)) == "auto"
    assert weights.requested(settings("int4", None)) == "int4"
    assert weights.requested(settings("auto", True)) == "packed"
    assert weights.requested(settings("dense", False)) == "dense"
    with pytest.raises(InvalidArgument, match="packed_weights=true asks for packed weights but weights is 'int4'"):
        weights.requested(settings("int4", True))


def test_auto_times_dense_against_packed_and_keeps_a_model_that_answers_the_same() -> None:
    model = Tiny()
    x = torch.randn(3, 64)
    with torch.no_grad():
        expected = model(x)
    choice = weights.choose(model, CPU, "auto", "auto", batch=8)
    assert choice.format in ("dense", "packed") and choice.dtype == torch.float32
    assert {"dense, 1 rows", "dense, 8 rows", "packed, 1 rows", "packed, 8 rows"} <= set(choice.timings_ms)
    assert choice.reason.startswith("timed: ")
    layer_type = PackedLinear if choice.format == "packed" else nn.Linear
    assert isinstance(model.up, layer_type) and isinstance(model.down, layer_type)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-4)
    assert "timed" in weights.describe(choice)


def test_dense_and_packed_are_applied_as_asked() -> None:
    dense, packed = Tiny(), Tiny()
    assert weights.choose(dense, CPU, "auto", "dense", batch=4).format == "dense"
    assert isinstance(dense.up, nn.Linear)
    assert weights.choose(packed, CPU, "auto", "packed", batch=4).format == "packed"
    assert isinstance(packed.up, PackedLinear)


@pytest.mark.skipif(not int4.available(), reason="no CPU 4-bit kernel")
def test_int4_computes_in_bfloat16_keeps_the_head_and_refuses_float32() -> None:
    model = Tiny(on_grid=True)
    choice = weights.choose(model, CPU, "auto", "int4", batch=4)
    assert (choice.format, choice.dtype, choice.reason) == ("int4", torch.bfloat16, "asked for")
    assert isinstance(model.up, int4.Int4Linear) and isinstance(model.lm_head, nn.Linear)
    assert model(torch.randn(2, 64, dtype=torch.bfloat16)).shape == (2, 96)
    with pytest.raises(InvalidArgument, match="dtype must be auto or bfloat16, not 'float32'"):
        weights.choose(Tiny(), CPU, "float32", "int4", batch=4)


def test_auto_serves_4bit_weights_as_int4_only_where_the_cpu_computes_bfloat16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert weights.four_bit_weights(Tiny(on_grid=True)) and not weights.four_bit_weights(Tiny())
    monkeypatch.setattr(weights, "cpu_computes_bf16", lambda: False)
    assert weights.choose(Tiny(on_grid=True), CPU, "auto", "auto", batch=4).format in ("dense", "packed")
    if int4.available():
        monkeypatch.setattr(weights, "cpu_computes_bf16", lambda: True)
        assert weights.choose(Tiny(on_grid=True), CPU, "auto", "auto", batch=4).format == "int4"
        # an explicit float32 keeps float32 even then
        assert weights.choose(Tiny(on_grid=True), CPU, "float32", "auto", batch=4).format in ("dense", "packed")
        assert weights.choose(Tiny(), CPU, "auto", "auto", batch=4).format in ("dense", "packed")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    assert weights.cpu_computes_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2\n")
    assert not weights.cpu_computes_bf16(info)
    assert not weights.cpu_computes_bf16(tmp_path / "missing")


def test_other_devices_keep_dense_layers() -> None:
    assert weights.choose(Tiny(), torch.device("meta"), "auto", "auto", batch=4).format == "dense"
    with pytest.raises(InvalidArgument, match="is for CPU"):
        weights.choose(Tiny(), torch.device("meta"), "auto", "int4", batch=4)
