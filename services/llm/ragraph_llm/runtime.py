"""MLServer runtime of the LLM service: V2 model ``llm``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from prometheus_client import REGISTRY
from ragraph_client.tensors import InferRequest, InferResponse
from ragraph_serving.runtime import RagraphRuntime

from . import llm_io
from .engine import Engine, Event
from .metrics import engine_metrics
from .model import LanguageModel, Prompt
from .settings import LLMSettings


class LLMRuntime(RagraphRuntime):
    """V2 model ``llm``: ``prompt`` BYTES [1] (or ``messages``: a JSON list of {role, content},
    rendered with the tokenizer's chat template) -> ``text`` BYTES [1].

    Request parameters: ``max_tokens``, ``temperature`` (0 = greedy), ``top_p``, ``top_k``,
    ``stop`` (JSON list), ``seed``, ``context`` (JSON list of passages); read in
    :mod:`ragraph_llm.llm_io`. Response parameters: ``prompt_tokens``, ``completion_tokens``,
    ``finish_reason`` (stop/length/cancelled), ``ttft_ms``, ``context_truncated``,
    ``passages_used``. ModelStreamInfer answers one response per text delta and a last one (empty
    or holding the tail) with the totals."""

    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self.config = LLMSettings(**extra)
        config = self.config
        # The engine's own thread loads the model: it is then the only thread running torch
        # compute (see Engine). The constructor waits for the load, so it runs off the event loop.
        self.engine = await asyncio.to_thread(
            Engine,
            lambda: LanguageModel(config),
            config.max_batch_size,
            config.max_queued,
            config.max_batch_time_ms,
            engine_metrics(REGISTRY),
            config.max_prefill_tokens,
            config.mixed_steps,
        )
        self.lm = self.engine.lm
        self.declare(llm_io.INPUTS, llm_io.OUTPUTS)
        return True

    async def unload(self) -> bool:
        engine = getattr(self, "engine", None)  # None when load failed (the model is unloaded after it)
        if engine is not None:
            await asyncio.to_thread(engine.close)
        return True

    def _prompt(self, request: llm_io.LLMRequest) -> Prompt:
        return self.lm.build_prompt(request.prompt, request.messages, request.passages, request.params.max_tokens)

    async def infer(self, request: InferRequest) -> InferResponse:
        job = llm_io.read_request(request, self.config)
        prompt = self._prompt(job)
        parts: list[str] = []
        last = Event("")
        async for event in self.engine.generate(prompt.ids, job.params):
            parts.append(event.text)
            last = event
        return llm_io.final_response(self.name, "".join(parts), prompt, last)

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        job = llm_io.read_request(request, self.config)
        prompt = self._prompt(job)
        async for event in self.engine.generate(prompt.ids, job.params):
            yield llm_io.event_response(self.name, prompt, event)
