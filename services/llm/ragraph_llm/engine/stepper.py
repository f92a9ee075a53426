"""What the engine asks of a stepper: how one step feeds the running batch through the model.

A stepper is chosen once at load (:func:`ragraph_llm.engine.engine.pick_stepper`) and owns the
KV cache of the running sequences. Each step the engine asks it to

- ``plan``: take from the waiting sequences what this step prefills (under the engine's lock),
- ``run``: the step's forward pass, returning the sequences that get a token and their logits,
- ``release``: drop the rows of sequences that left the batch from its cache,

and ``reset`` after a failed step (the running sequences are failed; the cache starts empty).
The two kinds are :class:`~.mixed.MixedStepper` and :class:`~.alternating.AlternatingStepper`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Protocol

import torch

from .sequence import Sequence


@dataclass
class Plan:
    """One step's work: ``prefill`` holds (sequence, prompt tokens this step) for prompts that go
    in, whole or a piece; ``decode`` whether the running sequences decode a token."""

    prefill: list[tuple[Sequence, int]]
    decode: bool

    @property
    def empty(self) -> bool:
        return not self.prefill and not self.decode


@dataclass
class Step:
    """What a step's forward pass gave: the newcomers that joined the running batch, and the
    sequences that get a token now with their rows of logits ([rows, vocab], float32)."""

    joined: list[Sequence]
    seqs: list[Sequence]
    logits: torch.Tensor


class Stepper(Protocol):
    """One kind of step over its own KV cache; only the engine thread calls it."""

    name: str

    def plan(self, waiting: collections.deque[Sequence], running: list[Sequence]) -> Plan:
        """Take this step's newcomers off ``waiting`` (the engine holds its lock)."""
        ...

    def run(self, plan: Plan, running: list[Sequence]) -> Step: ...

    def release(self, running: list[Sequence], keep: list[int]) -> None:
        """Only the rows ``keep`` of ``running`` stay in the batch: free the others' cache."""
        ...

    def reset(self) -> None:
        """Forget every running sequence (after a failed step)."""
        ...
