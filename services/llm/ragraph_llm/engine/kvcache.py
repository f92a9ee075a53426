"""The running batch's KV cache: rows join (merge) and leave (select) between steps.

Layers are :class:`GrowingLayer`. transformers' ``DynamicLayer`` concatenates the whole cache at
every step, so each decode step copies every layer's keys and values, and joining or leaving
the batch cost two or three more full copies (pad, concatenate, then the next step's
concatenate). Those copies took about a quarter of the engine's time with 16 streams of the bench
model (docs/benchmarks.md). A growing layer keeps its keys and values in buffers with spare
columns: a step writes its new column in place, trimming moves a start offset, and merging or
selecting rows copies once, into a buffer that again has room to grow.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_SPARE = 32  # spare columns a (re)allocated buffer gets at least; at least half the used ones


def _capacity(columns: int) -> int:
    return columns + max(MIN_SPARE, columns // 2)


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys``/``values`` are views ``buffer[:, :, start:end]``. If
    anything else replaces ``keys``/``values``, the next update adopts the new tensors (one copy)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._start = self._end = 0

    def _show(self, keys: torch.Tensor, values: torch.Tensor, start: int, end: int) -> None:
        self._buffers, self._start, self._end = (keys, values), start, end
        self.keys = keys[:, :, start:end]
        self.values = values[:, :, start:end]

    def _owned(self) -> bool:
        """Whether keys/values are still this layer's views (nobody replaced them)."""
        return (
            self._buffers is not None
            and self.keys is not None
            and self.keys.data_ptr() == self._buffers[0][:, :, self._start :].data_ptr()
            and self.keys.shape[-2] == self._end - self._start
            and self.keys.shape[0] == self._buffers[0].shape[0]
        )

    def _regrow(self, columns: int) -> None:
        """Copy the current keys/values to the left of fresh buffers with room for ``columns``."""
        assert self.keys is not None and self.values is not None
        rows, heads, used, dim = self.keys.shape
        keys = self.keys.new_empty((rows, heads, _capacity(columns), dim))
        values = self.values.new_empty((rows, heads, _capacity(columns), self.values.shape[-1]))
        if used:
            keys[:, :, :used] = self.keys
            values[:, :, :used] = self.values
        self._show(keys, values, 0, used)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if not self._owned():
            if self.keys is None or self.keys.numel() == 0:  # first update: nothing cached yet
                self.keys, self.values = key_states[:, :, :0], value_states[:, :, :0]
            self._regrow(self.keys.shape[-2] + new)
        assert self._buffers is not None
        if self._end + new > self._buffers[0].shape[-2]:
            self._regrow(self._end - self._start + new)
        keys, values = self._buffers  # type: ignore[misc]
        keys[:, :, self._end : self._end + new] = key_states
        values[:, :, self._end : self._end + new] = value_states
        self._show(keys, values, self._start, self._end + new)
        return self.keys, self.values  # type: ignore[return-value]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices``: one copy of the buffers (spare columns included)."""
        if self._owned():
            keys, values = self._buffers  # type: ignore[misc]
            self._show(keys.index_select(0, indices), values.index_select(0, indices), self._start, self._end)
        else:
            super().batch_select_indices(indices)

    def trim(self, columns: int) -> None:
        """Drop the first ``columns`` columns (no copy)."""
        if self._owned():
            keys, values = self._buffers  # type: ignore[misc]
            self._show(keys, values, self._start + columns, self._end)
        else:
            assert self.keys is not None and self.values is not None
            self.keys, self.values = self.keys[:, :, columns:], self.values[:, :, columns:]

    def merge(self, other: DynamicLayer, width: int) -> None:
        """Append ``other``'s rows below this layer's, both right-aligned to ``width`` columns
        (zeros on the left, masked out): one copy of each into a buffer with room to grow."""
        mine, theirs = (self.keys, self.values), (other.keys, other.values)
        assert mine[0] is not None and theirs[0] is not None
        rows = mine[0].shape[0] + theirs[0].shape[0]
        merged = []
        for a, b in zip(mine, theirs, strict=True):
            assert a is not None and b is not None
            out = a.new_zeros((rows, a.shape[1], _capacity(width), a.shape[-1]))
            out[: a.shape[0], :, width - a.shape[-2] : width] = a
            out[a.shape[0] :, :, width - b.shape[-2] : width] = b
            merged.append(out)
        self._show(merged[0], merged[1], 0, width)


def new_cache(config: Any) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose plain full-attention layers grow in place (sliding
    window and other layer types are kept as transformers builds them)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _pad_left_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return torch.nn.functional.pad(mask, (missing, 0)) if missing > 0 else mask


class RunningBatch:
    """KV cache and attention mask of the running sequences, one row each (left-padded)."""

    def __init__(self, cache: Any, mask: torch.Tensor) -> None:
        self.cache = cache
        self.mask = mask

    def layers(self) -> list[Any]:
        return list(self.cache.layers)

    def mergeable(self) -> bool:
        """Whether rows of another batch can join this one (plain full-attention layers only)."""
        return all(isinstance(layer, GrowingLayer) for layer in self.layers())

    def merge(self, other: RunningBatch) -> None:
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.layers(), other.layers(), strict=True):
            mine.merge(theirs, width)
        self.mask = torch.cat([_pad_left_mask(self.mask, width), _pad_left_mask(other.mask, width)])

    def select(self, rows: list[int], trim: bool) -> None:
        index = torch.tensor(rows, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        if trim:  # drop leading columns that are padding in every remaining row
            used = (self.mask.sum(dim=0) > 0).nonzero()
            first = int(used[0]) if len(used) else 0
            if first > 0:
                self.mask = self.mask[:, first:]
                for layer in self.layers():
                    layer.trim(first)
