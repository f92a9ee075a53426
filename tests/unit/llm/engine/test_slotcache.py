"""SlotCache bookkeeping: slots, right-aligned masks, and relayouts that keep every live column."""

from __future__ import annotations

import torch
from ragraph_llm.engine.slotcache import SlotCache


def _fill(cache: SlotCache, slot: int, first: int, last: int, seed: int) -> torch.Tensor:
    keys, values = cache.layer(0, torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    data = torch.randn(2, last - first + 1, 4, generator=torch.Generator().manual_seed(seed))
    keys[slot, :, first : last + 1] = data
    values[slot, :, first : last + 1] = -data
    return data


def test_newcomers_take_the_lowest_free_slots_right_aligned_to_the_step_column() -> None:
    cache = SlotCache(4, torch.device("cpu"))
    placed = cache.begin([], [(None, 5, 5), (None, 3, 3)])
    col = cache.end - 1
    assert placed == [(0, col - 4), (1, col - 2)]
    assert cache.mask[0].nonzero().flatten().tolist() == list(range(col - 4, col + 1))
    assert cache.mask[1].nonzero().flatten().tolist() == list(range(col - 2, col + 1))
    assert (cache.start, cache.span) == (col - 4, 2)
    # the running rows get the next column, and the newcomer's prompt ends in it
    assert cache.begin([0, 1], [(None, 2, 2)]) == [(2, cache.end - 2)]
    col = cache.end - 1
    assert cache.mask[:3, col].tolist() == [True, True, True]
    assert cache.mask[3].sum() == 0
    cache.release(0)
    assert cache.mask[0].sum() == 0 and cache.span == 3 and cache.start == col - 3
    assert cache.begin([1, 2], [(None, 4, 4)])[0][0] == 0  # the freed slot is reused first
    assert cache.mask[0].nonzero().flatten().tolist() == list(range(cache.end - 4, cache.end))


def test_relayout_keeps_live_columns_when_the_columns_run_out() -> None:
    cache = SlotCache(2, torch.device("cpu"))
    cache.begin([], [(None, 3, 3)])
    data = _fill(cache, 0, cache.end - 3, cache.end - 1, seed=1)
    relayouts = cache.relayouts
    while cache.end < cache.columns:  # decode steps up to the last column
        cache.begin([0], [])
    assert cache.relayouts == relayouts
    steps = cache.end - (cache.first[0] + 3)
    cache.begin([0], [])  # no column left: a relayout moves the live columns to the left
    assert cache.relayouts == relayouts + 1
    first = cache.first[0]
    keys, values = cache.keys[0], cache.values[0]
    assert torch.equal(keys[0, :, first : first + 3], data) and torch.equal(values[0, :, first : first + 3], -data)
    assert cache.mask[0].nonzero().flatten().tolist() == list(range(first, cache.end))
    assert cache.end - first == 3 + steps + 1 < cache.columns


def test_relayout_makes_room_to_the_left_for_a_long_prompt() -> None:
    cache = SlotCache(2, torch.device("cpu"))
    cache.begin([], [(None, 2, 2)])
    data = _fill(cache, 0, cache.end - 2, cache.end - 1, seed=2)
    relayouts = cache.relayouts
    placed = cache.begin([0], [(None, 50, 50)])  # 50 prompt columns must end in the step's column
    assert [slot for slot, _ in placed] == [1] and cache.relayouts == relayouts + 1
    col = cache.end - 1
    assert cache.first[1] == col - 49 >= 0
    first = cache.first[0]
    assert first == col - 2 and torch.equal(cache.keys[0][0, :, first : first + 2], data)
    assert cache.mask[0].nonzero().flatten().tolist() == [col - 2, col - 1, col]


def test_a_long_prompt_is_laid_out_whole_and_its_later_pieces_fill_its_columns() -> None:
    cache = SlotCache(3, torch.device("cpu"))
    cache.begin([], [(None, 4, 4)])  # slot 0 decodes from the next step on
    ((slot, first),) = cache.begin([0], [(None, 5, 11)])  # slot 1: the first 5 of an 11-token prompt
    admitted = cache.end - 1
    assert slot == 1 and first == admitted - 10  # the whole prompt would end in this step's column
    placed = cache.begin([0], [(1, 6, 11)])  # the next 6 tokens fill the reserved columns
    col = cache.end - 1
    assert placed == [(1, first + 5)] and col == admitted + 1  # the step's column moves by one as usual
    assert cache.mask[1].nonzero().flatten().tolist() == list(range(first, admitted + 1))
    assert cache.mask[0, admitted - 1 : col + 1].tolist() == [True, True, True]  # slot 0: no gap
