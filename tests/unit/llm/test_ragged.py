"""Mixed steps against the model's own forward pass: a long schedule of joins, decodes, leaves
and relayouts gives each sequence the logits of the whole sequence run alone."""

from __future__ import annotations

import random
from typing import Any

import torch
from ragraph_llm import ragged
from ragraph_llm.slotcache import SlotCache
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

VOCAB = 97


def _llama(kv_heads: int = 2) -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=512)  # fmt: skip
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
    model = _llama()
    assert ragged.supports_mixed_steps(model, VOCAB)
    ragged.switch(model, True)
    rng = random.Random(3)
    cache = SlotCache(4, torch.device("cpu"))
    running: dict[int, list[int]] = {}  # slot -> the sequence's tokens so far (prompt + generated)
    checked = long_prompts = 0
    for step in range(220):  # more steps than a buffer has columns: relayouts as the columns run out
        if step == 60 and len(running) == 4:
            cache.release(min(running))
            del running[min(running)]
        room = 4 - len(running)
        prompts = [_prompt(rng, rng.choice([3, 7, 20])) for _ in range(rng.randint(0, room))]
        if step == 60:  # more prompt columns than there are to the left of the step's column
            prompts = prompts[: room - 1] + [_prompt(rng, 90)]
            long_prompts += 1
        slots = sorted(running)
        last = [running[s][-1] for s in slots]
        at = [len(running[s]) - 1 for s in slots]
        logits, new = ragged.forward(model, cache, slots, last, at, prompts)
        assert logits.shape == (len(slots) + len(prompts), VOCAB)
        for row, seq in enumerate([running[s] for s in slots] + prompts):
            expected = _alone(model, seq)
            assert torch.allclose(logits[row], expected, atol=1e-4), f"step {step}, row {row}"
            checked += 1
        for slot, prompt in zip(new, prompts, strict=True):
            running[slot] = list(prompt)
        for slot in slots + new:
            running[slot].append(int(logits[(slots + new).index(slot)].argmax()))
        for slot in [s for s in running if rng.random() < 0.08]:  # some sequences finish
            cache.release(slot)
            del running[slot]
    assert cache.relayouts >= 3 and checked > 300 and long_prompts == 1


def test_the_check_accepts_full_attention_and_restores_the_attention() -> None:
    for model in (_llama(kv_heads=4), _llama(kv_heads=1)):
        before = model.config._attn_implementation
        assert ragged.supports_mixed_steps(model, VOCAB)
        assert model.config._attn_implementation == before


def test_the_check_refuses_sliding_window_models() -> None:
    config = MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=4)  # fmt: skip
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
