"""The engine's two kinds of step, as mixins of :class:`~.engine.Engine` (which owns the state
declared in :class:`EngineState`).

- :class:`MixedSteps`: one forward pass decodes every running sequence and prefills prompt
  pieces (:mod:`.ragged`, :mod:`.slotcache`); models that pass the load-time check.
- :class:`AlternatingSteps`: a step either prefills the newcomers (left-padded among themselves)
  and merges their KV cache into the running batch's (:mod:`.kvcache`), or decodes the running
  sequences; every other model.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

import torch

from . import ragged
from .kvcache import RunningBatch, new_cache
from .metrics import EngineMetrics
from .model import LanguageModel
from .sequence import Sequence
from .slotcache import SlotCache

log = logging.getLogger("ragraph.llm.engine")


class EngineState:
    """What the steps read and write; :class:`~.engine.Engine` sets it up and provides the two
    methods."""

    lm: LanguageModel
    max_batch_size: int
    max_prefill_tokens: int
    metrics: EngineMetrics
    _lock: threading.Condition
    _waiting: collections.deque[Sequence]
    _running: list[Sequence]
    _batch: RunningBatch | None
    _mergeable: bool | None
    _slots: SlotCache

    def _emit(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        raise NotImplementedError

    def _gauges(self) -> None:
        raise NotImplementedError


class MixedSteps(EngineState):
    def _pieces(self) -> list[tuple[Sequence, int]]:
        """The prompt tokens this mixed step prefills, at most max_prefill_tokens: first the
        rest of prompts begun in earlier steps, then newcomers while slots last. A prompt longer
        than what is left goes in pieces over several steps, so a long prompt never stalls the
        running streams for more than one budget's worth of prefill."""
        budget = self.max_prefill_tokens
        pieces: list[tuple[Sequence, int]] = []
        with self._lock:
            for seq in self._running:
                left = len(seq.prompt_ids) - seq.prefilled
                if left > 0 and budget > 0:
                    pieces.append((seq, min(left, budget)))
                    budget -= pieces[-1][1]
            room = self.max_batch_size - len(self._running)
            while self._waiting and room > 0 and budget > 0:
                seq = self._waiting.popleft()
                pieces.append((seq, min(len(seq.prompt_ids), budget)))
                budget -= pieces[-1][1]
                room -= 1
        return pieces

    def _mixed_step(self, pieces: list[tuple[Sequence, int]]) -> None:
        decoding = [s for s in self._running if s.prompt_in]
        logits, slots = ragged.forward(
            self.lm.model,
            self._slots,
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
        if new:
            with self._lock:
                self._running.extend(new)
                self._gauges()
        # a token for every decoding row and for each prompt completed in this step
        done = [i for i, (seq, _) in enumerate(pieces) if seq.prompt_in]
        rows = list(range(len(decoding))) + [len(decoding) + i for i in done]
        seqs = decoding + [pieces[i][0] for i in done]
        self._emit(seqs, logits if len(rows) == logits.shape[0] else logits[rows])


class AlternatingSteps(EngineState):
    def _admit(self) -> list[Sequence]:
        with self._lock:
            room = self.max_batch_size - len(self._running)
            if self._running and self._mergeable is False:
                room = 0
            admitted: list[Sequence] = []
            tokens = 0
            while self._waiting and len(admitted) < room:
                size = len(self._waiting[0].prompt_ids)
                if admitted and tokens + size > self.max_prefill_tokens:
                    break  # the rest prefill next step: a burst's first tokens arrive in waves
                admitted.append(self._waiting.popleft())
                tokens += size
            return admitted

    def _prefill(self, new: list[Sequence]) -> None:
        device, pad = self.lm.device, self.lm.pad_id
        width = max(len(s.prompt_ids) for s in new)
        ids = torch.tensor([[pad] * (width - len(s.prompt_ids)) + s.prompt_ids for s in new], device=device)
        mask = torch.tensor([[0] * (width - len(s.prompt_ids)) + [1] * len(s.prompt_ids) for s in new], device=device)
        cache = new_cache(self.lm.model.config)
        logits = self._forward(ids, mask, cache)
        batch = RunningBatch(cache, mask)
        if self._mergeable is None:
            self._mergeable = batch.mergeable()
            log.info(
                "KV cache %s merge: %s batching",
                "can" if self._mergeable else "cannot",
                "continuous" if self._mergeable else "static",
            )
        self.metrics.prompt_tokens.inc(sum(len(s.prompt_ids) for s in new))
        with self._lock:
            if self._batch is None:
                self._batch = batch
            else:
                self._batch.merge(batch)
            self._running.extend(new)
            self._gauges()
        self._emit(new, logits)

    def _decode(self) -> None:
        assert self._batch is not None
        batch = self._batch
        device = self.lm.device
        ids = torch.tensor([[s.tokens[-1]] for s in self._running], device=device)
        ones = torch.ones((len(self._running), 1), dtype=batch.mask.dtype, device=device)
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        logits = self._forward(ids, batch.mask, batch.cache)
        self._emit(self._running, logits)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, cache: Any) -> torch.Tensor:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        out = self.lm.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.metrics.batch_size.observe(ids.shape[0])
        return out.logits[:, -1, :].float()
