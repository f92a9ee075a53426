"""The engine in process on the tiny Llama: with mixed steps and with alternating steps, every
request of a staggered concurrent load gets the text plain ``generate`` gives it alone; a failed
step fails its requests, the newcomers of that step included, and the engine goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from ragraph_client.errors import Unavailable
from ragraph_llm.engine import Engine, SamplingParams, ragged
from ragraph_llm.engine.stepper import Plan, Step
from ragraph_llm.model import LanguageModel
from ragraph_llm.settings import LLMSettings

PROMPTS = ["The printing press was invented by", "Retrieval augmented generation means", "a", "Grüße aus München"]


@pytest.fixture(scope="module")
def lm(tiny_llm_dir: Path) -> LanguageModel:
    return LanguageModel(LLMSettings(model=str(tiny_llm_dir), device="cpu"))


def _generate(lm: LanguageModel, ids: list[int], tokens: int) -> str:
    ragged.switch(lm.model, False)
    with torch.inference_mode():
        x = torch.tensor([ids])
        out = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=tokens, do_sample=False)
    return str(lm.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))


async def _load(engine: Engine, prompts: list[list[int]], tokens: list[int]) -> list[str]:
    async def one(i: int) -> str:
        await asyncio.sleep(0.004 * i)  # arrivals join the running batch at different steps
        events = [e async for e in engine.generate(prompts[i], SamplingParams(max_tokens=tokens[i], temperature=0))]
        assert events[-1].finish_reason == "length" and events[-1].completion_tokens == tokens[i]
        return "".join(e.text for e in events)

    return list(await asyncio.gather(*(one(i) for i in range(len(prompts)))))


@pytest.mark.parametrize(
    ("mixed", "prefill_tokens"), [(True, 128), (True, 5), (False, 128)], ids=["mixed", "mixed-in-pieces", "alternating"]
)
def test_concurrent_greedy_requests_match_generate_alone(lm: LanguageModel, mixed: bool, prefill_tokens: int) -> None:
    """With a prefill budget of 5 tokens, every prompt but 'a' goes in over several steps."""
    prompts = [lm.encode(PROMPTS[i % len(PROMPTS)]) for i in range(10)]
    tokens = [12 + 7 * (i % 4) for i in range(10)]  # sequences leave at different steps
    expected = [_generate(lm, p, n) for p, n in zip(prompts, tokens, strict=True)]
    engine = Engine(
        lambda: lm,
        max_batch_size=4,
        max_queued=16,
        max_batch_time_ms=2.0,
        max_prefill_tokens=prefill_tokens,
        mixed_steps=mixed,
    )
    try:
        assert engine.mixed is mixed
        got = asyncio.run(_load(engine, prompts, tokens))
    finally:
        engine.close()
    assert got == expected
    samples = {s.name: s.value for m in engine.metrics.batch_size.collect() for s in m.samples}
    steps, rows = samples["ragraph_llm_step_batch_size_count"], samples["ragraph_llm_step_batch_size_sum"]
    assert rows > 1.5 * steps, "most steps ran several sequences"


def test_a_model_that_fails_to_load_fails_the_engine_constructor() -> None:
    def load() -> object:
        raise OSError("no such model directory: /nowhere")

    with pytest.raises(OSError, match="/nowhere"):
        Engine(load, max_batch_size=2, max_queued=2, max_batch_time_ms=1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("mixed", [True, False], ids=["mixed", "alternating"])
def test_a_failed_step_fails_its_requests_and_the_engine_goes_on(lm: LanguageModel, mixed: bool) -> None:
    prompt = lm.encode(PROMPTS[0])
    engine = Engine(lambda: lm, max_batch_size=4, max_queued=16, max_batch_time_ms=0.0, mixed_steps=mixed)
    run = engine.stepper.run

    def broken(plan: Plan, running: list[object]) -> Step:
        raise RuntimeError("the forward pass broke")

    async def one() -> str:
        events = [e async for e in engine.generate(prompt, SamplingParams(max_tokens=4, temperature=0))]
        return "".join(e.text for e in events)

    try:
        engine.stepper.run = broken  # type: ignore[method-assign]
        with pytest.raises(Unavailable, match="the forward pass broke"):
            asyncio.run(asyncio.wait_for(one(), timeout=30))  # the step's newcomer: failed, not forgotten
        engine.stepper.run = run  # type: ignore[method-assign]
        assert asyncio.run(asyncio.wait_for(one(), timeout=30)) == _generate(lm, prompt, 4)
    finally:
        engine.close()
