"""Generation parameters of one request (read and validated from V2 request parameters) and
choosing the next token from a row of logits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from ragraph_client.errors import InvalidArgument
from ragraph_client.params import get_float, get_int, get_json

from .settings import LLMSettings

MIN_TEMPERATURE = 1e-4  # below this, logits / temperature overflows float32: treated as greedy


@dataclass
class SamplingParams:
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE or self.top_k == 1


def read_sampling(params: Mapping[str, Any], settings: LLMSettings) -> SamplingParams:
    """Validate ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop`` and ``seed``.
    Numbers may arrive as int64 or string params. MLServer 1.7.1's gRPC InferParameter has no
    double_param: a float sent that way (tritonclient's default) is dropped before it gets here,
    so clients send floats as strings (ragraph_client: ``float_params="string"``)."""
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
    if len(stop) > 16:
        raise InvalidArgument(f"parameter 'stop' holds {len(stop)} strings, more than the limit of 16")
    seed = get_int(params, "seed", None)
    if seed is not None and not 0 <= seed < 2**63:
        raise InvalidArgument(f"parameter 'seed' must be in [0, 2**63), got {seed}")
    return SamplingParams(max_tokens, temperature, top_p, top_k, stop, seed)


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    if params.greedy:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
    return generator


def choose(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """The next token from one row of logits (float32, [vocab])."""
    if params.greedy or generator is None:
        return int(torch.argmax(logits))
    scores = logits / params.temperature
    if params.top_k > 0 and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, index = torch.sort(scores, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= params.top_p  # keep the token crossing top_p
        ordered = ordered.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(0, index, ordered)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
