"""MLServer runtime of the LLM service: V2 model ``llm``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import REGISTRY
from ragraph_client.errors import InvalidArgument
from ragraph_client.params import check_known, get_json
from ragraph_client.tensors import InferRequest, InferResponse, Param, Tensor, TensorSpec
from ragraph_serving.runtime import RagraphRuntime

from .engine import Engine
from .metrics import engine_metrics
from .model import LanguageModel, Prompt, read_messages, read_passages
from .sampling import SAMPLING_PARAMETERS, SamplingParams, read_sampling
from .sequence import Event
from .settings import LLMSettings

LLM_PARAMETERS = (*SAMPLING_PARAMETERS, "context")


@dataclass
class Job:
    prompt: Prompt
    params: SamplingParams


def _single_text(request: InferRequest, name: str) -> str:
    tensor = request.input(name)
    if tensor.datatype != "BYTES":
        raise InvalidArgument(f"input '{name}' must be BYTES, got {tensor.datatype}")
    texts = tensor.as_strings()
    if len(texts) != 1:
        raise InvalidArgument(f"input '{name}' must hold exactly one element, got {len(texts)} (shape {tensor.shape})")
    return texts[0]


class LLMRuntime(RagraphRuntime):
    """V2 model ``llm``: ``prompt`` BYTES [1] (or ``messages``: a JSON list of {role, content},
    rendered with the tokenizer's chat template) -> ``text`` BYTES [1].

    Request parameters: ``max_tokens``, ``temperature`` (0 = greedy), ``top_p``, ``top_k``,
    ``stop`` (JSON list), ``seed``, ``context`` (JSON list of passages). Numbers are read from
    int64 or string parameters; MLServer 1.7.1 drops double_param, so send floats as strings.
    Response parameters: ``prompt_tokens``, ``completion_tokens``, ``finish_reason``
    (stop/length/cancelled), ``ttft_ms``, ``context_truncated``, ``passages_used``.
    ModelStreamInfer answers one response per text delta and a last one (empty or holding the
    tail) with the totals."""

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
        self.declare(
            [TensorSpec("prompt", "BYTES", [1]), TensorSpec("messages", "BYTES", [1])],
            [TensorSpec("text", "BYTES", [1])],
        )
        return True

    async def unload(self) -> bool:
        engine = getattr(self, "engine", None)  # None when load failed (the model is unloaded after it)
        if engine is not None:
            await asyncio.to_thread(engine.close)
        return True

    def _job(self, request: InferRequest) -> Job:
        names = {t.name for t in request.inputs}
        if ("prompt" in names) == ("messages" in names):
            raise InvalidArgument(f"give exactly one of the inputs 'prompt' or 'messages' (got {sorted(names)})")
        unknown = names - {"prompt", "messages"}
        if unknown:
            raise InvalidArgument(f"unknown input '{sorted(unknown)[0]}' (the llm model takes 'prompt' or 'messages')")
        check_known(request.parameters, LLM_PARAMETERS, "llm")
        params = read_sampling(request.parameters, self.config)
        passages = read_passages(get_json(request.parameters, "context", []))
        if "prompt" in names:
            prompt, messages = _single_text(request, "prompt"), None
            size = len(prompt.encode())
        else:
            raw = _single_text(request, "messages")
            prompt, messages, size = None, read_messages(raw), len(raw.encode())
        size += sum(len(p.encode()) for p in passages)
        if size > self.config.max_prompt_bytes:
            raise InvalidArgument(
                f"input '{'prompt' if prompt is not None else 'messages'}' with its context is {size} bytes, "
                f"more than the limit of {self.config.max_prompt_bytes}"
            )
        return Job(self.lm.build_prompt(prompt, messages, passages, params.max_tokens), params)

    def _totals(self, job: Job, last: Event) -> dict[str, Param]:
        return {
            "prompt_tokens": last.prompt_tokens,
            "completion_tokens": last.completion_tokens,
            "finish_reason": last.finish_reason or "",
            "ttft_ms": round(last.ttft_ms, 3),
            "context_truncated": job.prompt.context_truncated,
            "passages_used": job.prompt.passages_used,
        }

    async def infer(self, request: InferRequest) -> InferResponse:
        job = self._job(request)
        parts: list[str] = []
        last = Event("")
        async for event in self.engine.generate(job.prompt.ids, job.params):
            parts.append(event.text)
            last = event
        return InferResponse(self.name, [Tensor.from_strings("text", ["".join(parts)])], self._totals(job, last))

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        job = self._job(request)
        async for event in self.engine.generate(job.prompt.ids, job.params):
            params = self._totals(job, event) if event.finish_reason is not None else {}
            yield InferResponse(self.name, [Tensor.from_strings("text", [event.text])], params)
