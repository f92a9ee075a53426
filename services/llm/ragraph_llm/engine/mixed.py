"""Mixed steps: one forward pass decodes every running sequence and prefills prompt pieces
(:mod:`.ragged`), over a cache with one fixed row per sequence (:mod:`.slotcache`). For models
that pass the load-time check (:func:`.ragged.supports_mixed_steps`)."""

from __future__ import annotations

import collections

from ..metrics import EngineMetrics
from ..model import LanguageModel
from . import ragged
from .sequence import Sequence
from .slotcache import SlotCache
from .stepper import Plan, Step


class MixedStepper:
    name = "mixed"

    def __init__(self, lm: LanguageModel, max_batch_size: int, max_prefill_tokens: int, metrics: EngineMetrics) -> None:
        self.lm = lm
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.metrics = metrics
        self.slots = SlotCache(max_batch_size, lm.device)

    def plan(self, waiting: collections.deque[Sequence], running: list[Sequence]) -> Plan:
        """The prompt tokens this step prefills, at most max_prefill_tokens: first the rest of
        prompts begun in earlier steps, then newcomers while slots last. A prompt longer than
        what is left goes in pieces over several steps, so a long prompt never stalls the running
        streams for more than one budget's worth of prefill."""
        budget = self.max_prefill_tokens
        pieces: list[tuple[Sequence, int]] = []
        for seq in running:
            left = len(seq.prompt_ids) - seq.prefilled
            if left > 0 and budget > 0:
                pieces.append((seq, min(left, budget)))
                budget -= pieces[-1][1]
        room = self.max_batch_size - len(running)
        while waiting and room > 0 and budget > 0:
            seq = waiting.popleft()
            pieces.append((seq, min(len(seq.prompt_ids), budget)))
            budget -= pieces[-1][1]
            room -= 1
        return Plan(pieces, decode=bool(running))

    def run(self, plan: Plan, running: list[Sequence]) -> Step:
        pieces = plan.prefill
        decoding = [s for s in running if s.prompt_in]
        logits, slots = ragged.forward(
            self.lm.model,
            self.slots,
            [s.slot for s in decoding],
            [s.tokens[-1] for s in decoding],
            [len(s.prompt_ids) + len(s.tokens) - 1 for s in decoding],
            [
                ragged.Piece(
                    s.prompt_ids[s.prefilled : s.prefilled + n],
                    s.prefilled,
                    s.slot if s.prefilled else None,
                    len(s.prompt_ids),
                )
                for s, n in pieces
            ],
        )
        self.metrics.batch_size.observe(len(decoding) + len(pieces))
        new = [seq for seq, _ in pieces if seq.prefilled == 0]
        for (seq, n), slot in zip(pieces, slots, strict=True):
            seq.slot, seq.prefilled = slot, seq.prefilled + n
        if pieces:
            self.metrics.prompt_tokens.inc(sum(n for _, n in pieces))
        # a token for every decoding row and for each prompt completed in this step
        done = [i for i, (seq, _) in enumerate(pieces) if seq.prompt_in]
        rows = list(range(len(decoding))) + [len(decoding) + i for i in done]
        seqs = decoding + [pieces[i][0] for i in done]
        return Step(new, seqs, logits if len(rows) == logits.shape[0] else logits[rows])

    def release(self, running: list[Sequence], keep: list[int]) -> None:
        """A free slot: nothing is copied."""
        kept = set(keep)
        for i, seq in enumerate(running):
            if i not in kept:
                self.slots.release(seq.slot)

    def reset(self) -> None:
        self.slots = SlotCache(self.max_batch_size, self.lm.device)
