"""The ``llm`` model's tensors and parameters <-> typed requests and responses (the LLM service's
one converter between V2 messages and the engine). Every request error names its input or
parameter.

Request parameters: ``max_tokens``, ``temperature`` (0 = greedy), ``top_p``, ``top_k``, ``stop``
(JSON list), ``seed``, ``repetition_penalty``, ``no_repeat_ngram_size``, ``context`` (JSON list of
passages). Numbers may arrive as int64 or string params. MLServer 1.7.1's gRPC InferParameter has
no double_param: a float sent that way (tritonclient's default) is dropped before it gets here, so
clients send floats as strings (ragraph_client: ``float_params="string"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ragraph_client import jsontext
from ragraph_client.errors import InvalidArgument
from ragraph_client.params import check_known, get_float, get_int, get_json
from ragraph_client.tensors import InferRequest, InferResponse, Param, Tensor, TensorSpec

from .engine import Event, SamplingParams
from .model import Prompt
from .settings import LLMSettings

INPUTS = [TensorSpec("prompt", "BYTES", [1]), TensorSpec("messages", "BYTES", [1])]
OUTPUTS = [TensorSpec("text", "BYTES", [1])]
SAMPLING_PARAMETERS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "repetition_penalty",
    "no_repeat_ngram_size",
)
PARAMETERS = (*SAMPLING_PARAMETERS, "context")
MAX_REPETITION_PENALTY = 10.0
MAX_NO_REPEAT_NGRAM = 64
MAX_STOP_STRINGS = 16
ROLES = {"system", "user", "assistant", "tool"}


@dataclass
class LLMRequest:
    """One request, validated: a ``prompt`` or chat ``messages`` (exactly one), the ``passages``
    to place before it, and how to generate."""

    prompt: str | None
    messages: list[dict[str, str]] | None
    passages: list[str]
    params: SamplingParams


def read_request(request: InferRequest, settings: LLMSettings) -> LLMRequest:
    names = {t.name for t in request.inputs}
    if ("prompt" in names) == ("messages" in names):
        raise InvalidArgument(f"give exactly one of the inputs 'prompt' or 'messages' (got {sorted(names)})")
    unknown = names - {"prompt", "messages"}
    if unknown:
        raise InvalidArgument(f"unknown input '{sorted(unknown)[0]}' (the llm model takes 'prompt' or 'messages')")
    check_known(request.parameters, PARAMETERS, "llm")
    params = read_sampling(request.parameters, settings)
    passages = read_passages(get_json(request.parameters, "context", []))
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    if "prompt" in names:
        prompt = _single_text(request, "prompt")
        size = len(prompt.encode())
    else:
        raw = _single_text(request, "messages")
        messages, size = read_messages(raw), len(raw.encode())
    size += sum(len(p.encode()) for p in passages)
    if size > settings.max_prompt_bytes:
        raise InvalidArgument(
            f"input '{'prompt' if prompt is not None else 'messages'}' with its context is {size} bytes, "
            f"more than the limit of {settings.max_prompt_bytes}"
        )
    return LLMRequest(prompt, messages, passages, params)


def _single_text(request: InferRequest, name: str) -> str:
    tensor = request.input(name)
    if tensor.datatype != "BYTES":
        raise InvalidArgument(f"input '{name}' must be BYTES, got {tensor.datatype}")
    texts = tensor.as_strings()
    if len(texts) != 1:
        raise InvalidArgument(f"input '{name}' must hold exactly one element, got {len(texts)} (shape {tensor.shape})")
    return texts[0]


def read_messages(raw: str) -> list[dict[str, str]]:
    """The ``messages`` input: a JSON list of {role, content}."""
    value = jsontext.loads(raw, "input 'messages'")  # depth and surrogates checked, as for every caller JSON
    if not isinstance(value, list) or not value:
        raise InvalidArgument("input 'messages' must be a non-empty JSON list of {role, content} objects")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("role"), str) or "content" not in item:
            raise InvalidArgument(f"input 'messages': element {i} must be an object with 'role' and 'content'")
        if item["role"] not in ROLES:
            raise InvalidArgument(f"input 'messages': element {i} has unknown role '{item['role']}'")
        if not isinstance(item["content"], str):
            raise InvalidArgument(f"input 'messages': element {i} has non-string 'content'")
        out.append({"role": item["role"], "content": item["content"]})
    return out


def read_passages(value: Any) -> list[str]:
    """The ``context`` parameter, parsed: a JSON list of strings."""
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise InvalidArgument("parameter 'context' must be a JSON list of strings")
    return list(value)


def read_sampling(params: Mapping[str, Any], settings: LLMSettings) -> SamplingParams:
    """Validate ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop``, ``seed``,
    ``repetition_penalty`` and ``no_repeat_ngram_size``; defaults from ``settings``."""
    max_tokens = get_int(params, "max_tokens", settings.default_max_tokens)
    assert max_tokens is not None
    if max_tokens < 1:
        raise InvalidArgument(f"parameter 'max_tokens' must be at least 1, got {max_tokens}")
    if max_tokens > settings.max_tokens_limit:
        raise InvalidArgument(
            f"parameter 'max_tokens' is {max_tokens}, more than this server's limit of {settings.max_tokens_limit}"
        )
    temperature = get_float(params, "temperature", settings.default_temperature)
    assert temperature is not None
    if not temperature >= 0.0 or temperature == float("inf"):
        raise InvalidArgument(f"parameter 'temperature' must be a finite number >= 0, got {temperature}")
    top_p = get_float(params, "top_p", 1.0)
    assert top_p is not None
    if not 0.0 < top_p <= 1.0:
        raise InvalidArgument(f"parameter 'top_p' must be in (0, 1], got {top_p}")
    top_k = get_int(params, "top_k", 0)
    assert top_k is not None
    if top_k < 0:
        raise InvalidArgument(f"parameter 'top_k' must be >= 0 (0 = off), got {top_k}")
    stop = get_json(params, "stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise InvalidArgument("parameter 'stop' must be a JSON list of strings")
    if any(s == "" for s in stop):
        raise InvalidArgument("parameter 'stop' holds an empty string")
    if len(stop) > MAX_STOP_STRINGS:
        raise InvalidArgument(f"parameter 'stop' holds {len(stop)} strings, more than the limit of {MAX_STOP_STRINGS}")
    seed = get_int(params, "seed", None)
    if seed is not None and not 0 <= seed < 2**63:
        raise InvalidArgument(f"parameter 'seed' must be in [0, 2**63), got {seed}")
    penalty = get_float(params, "repetition_penalty", 1.0)
    assert penalty is not None
    if not 0.0 < penalty <= MAX_REPETITION_PENALTY:
        raise InvalidArgument(
            f"parameter 'repetition_penalty' must be in (0, {MAX_REPETITION_PENALTY:g}] (1 = off), got {penalty}"
        )
    ngram = get_int(params, "no_repeat_ngram_size", 0)
    assert ngram is not None
    if not 0 <= ngram <= MAX_NO_REPEAT_NGRAM:
        raise InvalidArgument(
            f"parameter 'no_repeat_ngram_size' must be in [0, {MAX_NO_REPEAT_NGRAM}] (0 = off), got {ngram}"
        )
    return SamplingParams(max_tokens, temperature, top_p, top_k, stop, seed, penalty, ngram)


def totals(prompt: Prompt, last: Event) -> dict[str, Param]:
    """The response parameters of a finished request."""
    return {
        "prompt_tokens": last.prompt_tokens,
        "completion_tokens": last.completion_tokens,
        "finish_reason": last.finish_reason or "",
        "ttft_ms": round(last.ttft_ms, 3),
        "context_truncated": prompt.context_truncated,
        "passages_used": prompt.passages_used,
    }


def final_response(model: str, text: str, prompt: Prompt, last: Event) -> InferResponse:
    """The whole text for ModelInfer, with the totals."""
    return InferResponse(model, [Tensor.from_strings("text", [text])], totals(prompt, last))


def event_response(model: str, prompt: Prompt, event: Event) -> InferResponse:
    """One streamed message: a text delta; the last one (empty or holding the tail) carries the
    totals."""
    params = totals(prompt, event) if event.finish_reason is not None else {}
    return InferResponse(model, [Tensor.from_strings("text", [event.text])], params)
