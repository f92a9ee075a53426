"""The KV cache of mixed steps: one fixed row (slot) per running sequence, so joining and leaving
the batch copy nothing.

:class:`~.kvcache.RunningBatch` keeps one row per running sequence in order, so a sequence that
joins or leaves makes every layer's keys and values be copied into new buffers (about 5 ms each
way with 16 rows of the bench model: a quarter of the engine's time in steady state, where a
sequence joins and one leaves every other step). Here every layer has one buffer
``[slots, kv_heads, columns, head_dim]`` for the engine's lifetime. Rows are right-aligned: the
step writes every running row's new token in the same column, and a newcomer's prompt goes into
a free slot so that its last token lands in that column too, masked out to its left. A sequence
that leaves frees its slot by clearing its mask row. Attention reads the columns from the oldest
live row's first one to the step's column, over slots 0..highest live slot (free slots reused
lowest first, so the live ones stay packed). Buffers are copied only when the columns run out
(or a newcomer's prompt needs more room to the left than there is): once every few dozen steps.
Every slot has the same columns, so the cache holds ``max_batch_size`` rows of up to ~1.5x the
longest live sequence (prompt and completion), whichever rows are in use: the price of never
copying on join or leave.
"""

from __future__ import annotations

import torch

MIN_ROOM = 64  # spare columns a relayout leaves at least


class SlotCache:
    """Keys, values and mask of up to ``slots`` sequences; layers are allocated on first use."""

    def __init__(self, slots: int, device: torch.device) -> None:
        self.slots = slots
        self.device = device
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.columns = MIN_ROOM
        self.mask = torch.zeros((slots, self.columns), dtype=torch.bool, device=device)
        self.end = 0  # the column the next step writes
        self.first: dict[int, int] = {}  # live slot -> its first column
        self.next: dict[int, int] = {}  # live slot -> where the next piece of its prompt goes
        self.relayouts = 0

    # -- between steps (engine thread) --------------------------------------------------------

    @property
    def start(self) -> int:
        return min(self.first.values()) if self.first else self.end

    @property
    def span(self) -> int:
        """Slots attention reads this step: 0 .. the highest live slot."""
        return max(self.first) + 1 if self.first else 0

    def begin(self, running: list[int], pieces: list[tuple[int | None, int, int]]) -> list[tuple[int, int]]:
        """Reserve this step's column: the ``running`` slots decode into it. ``pieces`` are prompt
        chunks ``(slot, tokens, prompt length)``. A newcomer (slot None) gets a free slot whose
        whole prompt is laid out to end in this column, its first chunk at the left end; a later
        chunk of that prompt fills the next reserved columns (to the left of later steps'
        columns, so nobody else's rows move). Returns ``(slot, first column)`` for each piece."""
        fresh = sum(slot is None for slot, _, _ in pieces)
        free = sorted(set(range(self.slots)) - set(self.first))
        if fresh > len(free):
            raise ValueError(f"{fresh} newcomers but only {len(free)} free slots")
        self._reserve(max((total for slot, _, total in pieces if slot is None), default=1))
        col = self.end
        if running:
            self.mask[running, col] = True
        placed = []
        for slot, n, total in pieces:
            if slot is None:
                slot = free.pop(0)
                self.mask[slot] = False
                self.first[slot] = self.next[slot] = col - total + 1
            first = self.next[slot]
            self.mask[slot, first : first + n] = True
            self.next[slot] = first + n
            placed.append((slot, first))
        self.end = col + 1
        return placed

    def release(self, slot: int) -> None:
        self.first.pop(slot, None)
        self.next.pop(slot, None)
        self.mask[slot] = False

    def _reserve(self, longest: int) -> None:
        """Make room for this step's column and ``longest`` prompt columns ending in it."""
        col = self.end
        if col + 1 <= self.columns and col - longest + 1 >= 0:
            return
        start = self.start
        width = col - start
        new_end = max(width, longest - 1)
        columns = new_end + 1 + max(MIN_ROOM, (new_end + 1) // 2)  # room to grow, as kvcache gives
        shift = new_end - col
        self.keys = {layer: self._moved(t, start, width, new_end, columns) for layer, t in self.keys.items()}
        self.values = {layer: self._moved(t, start, width, new_end, columns) for layer, t in self.values.items()}
        self.mask = self._moved(self.mask, start, width, new_end, columns)
        self.first = {slot: first + shift for slot, first in self.first.items()}
        self.next = {slot: column + shift for slot, column in self.next.items()}
        self.columns, self.end = columns, new_end
        self.relayouts += 1

    @staticmethod
    def _moved(t: torch.Tensor, start: int, width: int, new_end: int, columns: int) -> torch.Tensor:
        """``t``'s live columns [start, start + width) copied to [new_end - width, new_end) of a
        fresh tensor with ``columns`` columns (dimension 2 for buffers, 1 for the mask)."""
        dim = 1 if t.dim() == 2 else 2
        shape = list(t.shape)
        shape[dim] = columns
        out = t.new_zeros(shape)
        if width:
            out.narrow(dim, new_end - width, width).copy_(t.narrow(dim, start, width))
        return out

    # -- inside a step (the attention function) -----------------------------------------------

    def layer(
        self, layer: int, like_keys: torch.Tensor, like_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The buffers of ``layer``, allocated like the model's keys/values on first use."""
        if layer not in self.keys:
            heads, dim, vdim = like_keys.shape[1], like_keys.shape[-1], like_values.shape[-1]
            self.keys[layer] = like_keys.new_zeros((self.slots, heads, self.columns, dim))
            self.values[layer] = like_values.new_zeros((self.slots, heads, self.columns, vdim))
        return self.keys[layer], self.values[layer]
