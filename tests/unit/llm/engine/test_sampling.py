"""choose (the next token from a row of logits) and the penalties, from
services/llm/ragraph_llm/engine/sampling.py."""

from __future__ import annotations

import pytest
import torch
from ragraph_llm.engine.sampling import SamplingParams, banned_by_ngrams, choose, make_generator, penalize
from ragraph_llm.llm_io import read_sampling
from ragraph_llm.settings import LLMSettings

CPU = torch.device("cpu")


@pytest.fixture()
def settings() -> LLMSettings:
    return LLMSettings(default_max_tokens=77, default_temperature=0.7, max_tokens_limit=4096)


# -- choose -----------------------------------------------------------------------------------


def logits_row(seed: int = 0, size: int = 50) -> torch.Tensor:
    return torch.randn(size, generator=torch.Generator().manual_seed(seed)) * 3


def draws(logits: torch.Tensor, params: SamplingParams, n: int) -> list[int]:
    generator = make_generator(params, CPU)  # None for greedy (and near-zero temperature)
    return [choose(logits, params, generator) for _ in range(n)]


def test_greedy_is_argmax() -> None:
    greedy = SamplingParams(temperature=0.0, seed=3)
    assert make_generator(greedy, CPU) is None
    for seed in range(20):
        logits = logits_row(seed)
        assert choose(logits, greedy, None) == int(torch.argmax(logits))


def test_top_k_one_is_argmax() -> None:
    params = SamplingParams(temperature=1.5, top_k=1, seed=1)
    for seed in range(20):
        logits = logits_row(seed)
        assert choose(logits, params, torch.Generator().manual_seed(seed)) == int(torch.argmax(logits))


def test_seeded_sampling_is_reproducible_and_depends_on_the_seed() -> None:
    flat = torch.zeros(1000)
    first = draws(flat, SamplingParams(temperature=1.0, seed=1234), 40)
    again = draws(flat, SamplingParams(temperature=1.0, seed=1234), 40)
    other = draws(flat, SamplingParams(temperature=1.0, seed=1235), 40)
    assert first == again
    assert first != other
    assert len(set(first)) > 30, "a flat distribution spreads its draws"


def test_unseeded_sampling_differs_between_generators() -> None:
    flat = torch.zeros(1000)
    params = SamplingParams(temperature=1.0)
    assert draws(flat, params, 40) != draws(flat, params, 40)


def test_tiny_top_p_keeps_only_the_top_token() -> None:
    for seed in range(10):
        logits = logits_row(seed)
        params = SamplingParams(temperature=5.0, top_p=1e-6, seed=seed)
        assert set(draws(logits, params, 100)) == {int(torch.argmax(logits))}


def test_top_p_keeps_the_token_crossing_the_threshold() -> None:
    logits = torch.log(torch.tensor([0.1, 0.4, 0.2, 0.3]))
    # sorted: 0.4, 0.3, 0.2, 0.1 -> with top_p=0.5, 0.4 alone is short of it, so 0.3 is kept too
    assert set(draws(logits, SamplingParams(temperature=1.0, top_p=0.5, seed=7), 500)) == {1, 3}
    assert set(draws(logits, SamplingParams(temperature=1.0, top_p=0.4, seed=7), 200)) == {1}


def test_top_k_two_never_leaves_the_top_two() -> None:
    logits = torch.linspace(1.0, 0.9, 100)[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    top2 = set(torch.topk(logits, 2).indices.tolist())
    picked = draws(logits, SamplingParams(temperature=1.0, top_k=2, seed=11), 2000)
    assert set(picked) == top2
    unrestricted = draws(logits, SamplingParams(temperature=1.0, seed=11), 2000)
    assert len(set(unrestricted) - top2) > 50, "without top_k the same row spreads much wider"


def test_top_k_and_top_p_together() -> None:
    logits = torch.log(torch.tensor([0.05, 0.3, 0.25, 0.2, 0.2]))
    # top_k=3 keeps 0.3, 0.25, 0.2 (one of the tied 0.2s or both); top_p=0.4 then keeps 0.3 and 0.25
    picked = draws(logits, SamplingParams(temperature=1.0, top_k=3, top_p=0.4, seed=5), 500)
    assert set(picked) == {1, 2}


def test_low_temperature_concentrates_on_the_top_token() -> None:
    logits = logits_row(3)
    for temperature in (0.01, 1e-30):
        picked = draws(logits, SamplingParams(temperature=temperature, seed=2), 200)
        assert set(picked) == {int(torch.argmax(logits))}


# Temperatures below MIN_TEMPERATURE would overflow float32 logits / temperature; they are greedy.
def test_subnormal_temperature_does_not_break_sampling(settings: LLMSettings) -> None:
    params = read_sampling({"temperature": "1e-39", "seed": "1"}, settings)  # accepted by validation
    logits = logits_row(3)
    assert draws(logits, params, 5) == [int(torch.argmax(logits))] * 5


# -- penalties --------------------------------------------------------------------------------


def test_off_penalties_leave_the_logits_alone() -> None:
    logits = logits_row(4)
    assert penalize(logits, SamplingParams(temperature=0.0), [1, 2, 3]) is logits
    assert choose(logits, SamplingParams(temperature=0.0), None, [int(torch.argmax(logits))]) == int(
        torch.argmax(logits)
    )


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    out = penalize(logits, SamplingParams(repetition_penalty=2.0), [0, 1, 1])
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]
    assert logits.tolist() == [2.0, -2.0, 1.0, 0.5], "the row itself is not changed"


def test_repetition_penalty_moves_greedy_off_a_generated_token() -> None:
    logits = torch.tensor([3.0, 2.5, 0.0])
    greedy = SamplingParams(temperature=0.0, repetition_penalty=1.5)
    assert choose(logits, greedy, None, []) == 0  # nothing generated yet: argmax
    assert choose(logits, greedy, None, [0]) == 1  # 3.0 / 1.5 = 2.0 < 2.5
    assert choose(logits, SamplingParams(temperature=0.0, repetition_penalty=1.1), None, [0]) == 0  # 2.73 > 2.5


def test_banned_by_ngrams() -> None:
    assert banned_by_ngrams([5, 6, 7, 5, 6], 3) == {7}  # "5 6" was followed by 7
    assert banned_by_ngrams([5, 6, 7, 5, 6], 2) == {7}  # "6" was followed by 7
    assert banned_by_ngrams([5, 6, 5, 8, 5], 2) == {6, 8}
    assert banned_by_ngrams([5, 6, 7], 1) == {5, 6, 7}
    assert banned_by_ngrams([5, 6, 7, 5, 6], 0) == set()
    assert banned_by_ngrams([5, 6], 3) == set()  # shorter than n
    assert banned_by_ngrams([1, 2, 3, 4], 3) == set()  # "3 4" never seen before


def test_no_repeat_ngram_breaks_a_greedy_loop() -> None:
    """A row that always prefers 1 after 0 and 0 after 1 loops "0 1 0 1 ..." greedily; with
    no_repeat_ngram_size=3 the second "0 1" cannot be followed by 0 again."""

    def next_token(tokens: list[int], params: SamplingParams) -> int:
        prefer = 1 if tokens and tokens[-1] == 0 else 0
        logits = torch.full((4,), -1.0)
        logits[prefer], logits[2] = 2.0, 1.0
        return choose(logits, params, None, tokens)

    for params, expected in (
        (SamplingParams(temperature=0.0), [0, 1, 0, 1, 0, 1]),
        (SamplingParams(temperature=0.0, no_repeat_ngram_size=3), [0, 1, 0, 1, 2, 0]),
    ):
        tokens: list[int] = []
        for _ in range(6):
            tokens.append(next_token(tokens, params))
        assert tokens == expected


def test_penalties_apply_before_sampling() -> None:
    logits = torch.tensor([5.0, 5.0, -50.0])
    params = SamplingParams(temperature=1.0, no_repeat_ngram_size=1, seed=3)
    generator = make_generator(params, CPU)
    picked = {choose(logits, params, generator, [0]) for _ in range(200)}
    assert picked == {1}, "token 0 was generated before and no_repeat_ngram_size=1 bans it"
