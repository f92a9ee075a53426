"""Mixed steps against the model's own forward pass: a long schedule of joins, decodes, leaves
and relayouts gives each sequence the logits of the whole sequence run alone."""

from __future__ import annotations

import random
from typing import Any

import torch
from ragraph_llm.engine import ragged
from ragraph_llm.engine.slotcache import SlotCache
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

VOCAB = 97


def _llama(kv_heads: int = 2) -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).eval()


def _prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(VOCAB) for _ in range(n)]


def _alone(model: Any, ids: list[int]) -> torch.Tensor:
    ragged.switch(model, False)
    try:
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    finally:
        ragged.switch(model, True)


@torch.inference_mode()
def test_a_long_schedule_of_mixed_steps_matches_each_sequence_alone() -> None:
    """Like the engine: each step decodes the sequences whose prompt is in, and prefills up to a
    budget of prompt tokens, first the rest of prompts begun earlier, then newcomers, so long
    prompts go in pieces over several steps. Every returned row must match the model run on
    that sequence's tokens so far."""
    model = _llama()
    assert ragged.supports_mixed_steps(model, VOCAB)
    ragged.switch(model, True)
    rng = random.Random(3)
    cache = SlotCache(4, torch.device("cpu"))
    prompts: dict[int, list[int]] = {}  # slot -> the prompt
    tokens: dict[int, list[int]] = {}  # slot -> prompt tokens in the cache so far, then generated ones
    checked = pieces_after_the_first = 0
    for step in range(220):  # more steps than a buffer has columns: relayouts as the columns run out
        if step == 60 and len(prompts) == 4:
            victim = min(prompts)
            cache.release(victim)
            del prompts[victim], tokens[victim]
        budget = rng.choice([6, 25, 60, 200])
        decoding = sorted(s for s in prompts if len(tokens[s]) >= len(prompts[s]))
        pieces, owners = [], []
        for slot in sorted(s for s in prompts if len(tokens[s]) < len(prompts[s])):  # prompts begun earlier
            n = min(len(prompts[slot]) - len(tokens[slot]), budget)
            if n > 0:
                done = len(tokens[slot])
                pieces.append(ragged.Piece(prompts[slot][done : done + n], done, slot, len(prompts[slot])))
                owners.append(prompts[slot])
                budget -= n
                pieces_after_the_first += 1
        for _ in range(rng.randint(0, 4 - len(prompts))):
            if budget <= 0:
                break
            # a 90-token prompt at step 60: more columns than there are left of the step's column
            prompt = _prompt(rng, 90 if step == 60 else rng.choice([3, 7, 20, 45]))
            pieces.append(ragged.Piece(prompt[: min(len(prompt), budget)], total=len(prompt)))
            owners.append(prompt)
            budget -= len(pieces[-1].ids)
        last = [tokens[s][-1] for s in decoding]
        at = [len(tokens[s]) - 1 for s in decoding]
        logits, slots = ragged.forward(model, cache, decoding, last, at, pieces)
        if not decoding and not pieces:
            assert logits.numel() == 0 and slots == []
            continue
        assert logits.shape == (len(decoding) + len(pieces), VOCAB)
        seen = [tokens[s] for s in decoding] + [p.ids if p.slot is None else tokens[p.slot] + p.ids for p in pieces]
        for row, seq in enumerate(seen):
            assert torch.allclose(logits[row], _alone(model, seq), atol=1e-4), f"step {step}, row {row}"
            checked += 1
        for piece, slot, prompt in zip(pieces, slots, owners, strict=True):
            prompts[slot] = prompt
            tokens[slot] = tokens.get(slot, []) + piece.ids if piece.slot is not None else list(piece.ids)
        for row, slot in enumerate(decoding):
            tokens[slot].append(int(logits[row].argmax()))
        for row, slot in enumerate(slots):
            if len(tokens[slot]) == len(prompts[slot]):  # its prompt is in: the first generated token
                tokens[slot].append(int(logits[len(decoding) + row].argmax()))
        for slot in [s for s in decoding if rng.random() < 0.08]:  # some sequences finish
            cache.release(slot)
            del prompts[slot], tokens[slot]
    assert cache.relayouts >= 3 and checked > 300 and pieces_after_the_first > 10


def test_the_check_accepts_full_attention_and_restores_the_attention() -> None:
    for model in (_llama(kv_heads=4), _llama(kv_heads=1)):
        before = model.config._attn_implementation
        assert ragged.supports_mixed_steps(model, VOCAB)
        assert model.config._attn_implementation == before


def test_the_check_refuses_sliding_window_models() -> None:
    config = MistralConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=4,
    )
    assert not ragged.supports_mixed_steps(MistralForCausalLM(config).eval(), VOCAB)


def test_the_check_refuses_a_forward_pass_that_gets_the_attention_wrong() -> None:
    model = _llama()

    def no_attention(module: Any, query: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        return torch.zeros_like(query).transpose(1, 2), None

    ragged.AttentionInterface.register(ragged.RAGGED, no_attention)
    try:
        assert not ragged.supports_mixed_steps(model, VOCAB)
    finally:
        ragged.AttentionInterface.register(ragged.RAGGED, ragged.mixed_attention)
