"""GrowingLayer against the plain tensor operations it replaces (transformers' DynamicLayer
concatenation, padding, row selection)."""

from __future__ import annotations

import torch
from ragraph_llm.engine.kvcache import GrowingLayer, RunningBatch, new_cache
from transformers import LlamaConfig
from transformers.cache_utils import DynamicLayer


def _states(rows: int, columns: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, columns, 4, generator=gen), torch.randn(rows, 2, columns, 4, generator=gen)


def _pad_left(states: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(states, (0, 0, width - states.shape[-2], 0))


def test_updates_match_concatenation_and_write_in_place() -> None:
    layer, ref_k, ref_v = GrowingLayer(), *_states(3, 5, 0)
    layer.update(ref_k, ref_v)
    buffer = layer.keys.data_ptr()
    for step in range(20):  # decode steps: one column each
        k, v = _states(3, 1, step + 1)
        keys, values = layer.update(k, v)
        ref_k, ref_v = torch.cat([ref_k, k], dim=-2), torch.cat([ref_v, v], dim=-2)
        assert torch.equal(keys, ref_k) and torch.equal(values, ref_v)
    assert layer.keys.data_ptr() == buffer  # 25 columns fit the first buffer: no copy per step
    assert layer.get_seq_length() == 25
    for step in range(40):  # past the spare room: the layer regrows and stays correct
        k, v = _states(3, 1, 100 + step)
        keys, _ = layer.update(k, v)
        ref_k = torch.cat([ref_k, k], dim=-2)
    assert torch.equal(keys, ref_k)


def test_select_trim_and_merge_match_plain_tensor_operations() -> None:
    layer = GrowingLayer()
    k, v = _states(4, 6, 1)
    layer.update(k, v)
    index = torch.tensor([0, 2, 3])
    layer.batch_select_indices(index)
    k, v = k[index], v[index]
    assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)
    layer.trim(2)
    k, v = k[:, :, 2:], v[:, :, 2:]
    assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)
    other = GrowingLayer()
    k2, v2 = _states(2, 7, 2)
    other.update(k2, v2)
    layer.merge(other, 7)
    merged_k = torch.cat([_pad_left(k, 7), _pad_left(k2, 7)])
    merged_v = torch.cat([_pad_left(v, 7), _pad_left(v2, 7)])
    assert torch.equal(layer.keys, merged_k) and torch.equal(layer.values, merged_v)
    step_k, step_v = _states(5, 1, 3)
    keys, values = layer.update(step_k, step_v)  # and decoding goes on from the merged rows
    assert torch.equal(keys, torch.cat([merged_k, step_k], dim=-2))
    assert torch.equal(values, torch.cat([merged_v, step_v], dim=-2))


def test_keys_replaced_from_outside_are_adopted() -> None:
    layer = GrowingLayer()
    k, v = _states(2, 4, 4)
    layer.update(k, v)
    layer.keys, layer.values = k[:1].clone(), v[:1].clone()  # e.g. a transformers helper
    step_k, step_v = _states(1, 1, 5)
    keys, values = layer.update(step_k, step_v)
    assert torch.equal(keys, torch.cat([k[:1], step_k], dim=-2))
    assert torch.equal(values, torch.cat([v[:1], step_v], dim=-2))


def test_new_cache_uses_growing_layers_and_is_mergeable() -> None:
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2
    )
    cache = new_cache(config)
    assert [type(layer) for layer in cache.layers] == [GrowingLayer] * 3
    assert RunningBatch(cache, torch.ones(1, 1)).mergeable()
    plain = new_cache(config)
    plain.layers = [DynamicLayer() for _ in plain.layers]
    assert not RunningBatch(plain, torch.ones(1, 1)).mergeable()
