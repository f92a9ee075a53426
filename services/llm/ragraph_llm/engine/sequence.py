"""A request as the engine sees it (:class:`Sequence`) and what it hands back (:class:`Event`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .sampling import SamplingParams
from .textstream import TextStream


@dataclass
class Event:
    """What the engine hands back for a sequence: a text delta, and on the last event the totals."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    error: BaseException | None = None


@dataclass
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    stream: TextStream
    loop: asyncio.AbstractEventLoop  # where the consumer runs: events are put on its queue there
    put: Callable[[Event], object]
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    submitted: float = field(default_factory=time.monotonic)
    first_token_at: float = 0.0
    last_token_at: float = 0.0
    finish_reason: str | None = None
    cancelled: bool = False
    id: int = 0
    slot: int = -1  # its row in the SlotCache of mixed steps
    prefilled: int = 0  # prompt tokens in the cache so far (mixed steps prefill long prompts in pieces)

    @property
    def prompt_in(self) -> bool:
        """Whether its whole prompt is in the cache (mixed steps): it decodes from now on."""
        return self.prefilled == len(self.prompt_ids)
