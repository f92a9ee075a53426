"""Alternating steps: a step either prefills the newcomers (left-padded among themselves) and
merges their KV cache into the running batch's (:mod:`.kvcache`), or decodes the running
sequences. For every model that does not take mixed steps; one whose cache cannot be merged
(sliding-window or recurrent layers) runs static batches: newcomers join an empty batch only."""

from __future__ import annotations

import collections
import logging
from typing import Any

import torch

from ..metrics import EngineMetrics
from ..model import LanguageModel
from .kvcache import RunningBatch, new_cache
from .sequence import Sequence
from .stepper import Plan, Step

log = logging.getLogger("ragraph.llm.engine")


class AlternatingStepper:
    name = "alternating"

    def __init__(self, lm: LanguageModel, max_batch_size: int, max_prefill_tokens: int, metrics: EngineMetrics) -> None:
        self.lm = lm
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.metrics = metrics
        self.batch: RunningBatch | None = None
        self.mergeable: bool | None = None  # found out at the first prefill

    def plan(self, waiting: collections.deque[Sequence], running: list[Sequence]) -> Plan:
        """Newcomers while rows last, up to max_prefill_tokens (at least one whole prompt); the
        running sequences decode in the steps without any."""
        room = self.max_batch_size - len(running)
        if running and self.mergeable is False:
            room = 0
        admitted: list[tuple[Sequence, int]] = []
        tokens = 0
        while waiting and len(admitted) < room:
            size = len(waiting[0].prompt_ids)
            if admitted and tokens + size > self.max_prefill_tokens:
                break  # the rest prefill next step: a burst's first tokens arrive in waves
            admitted.append((waiting.popleft(), size))
            tokens += size
        return Plan(admitted, decode=not admitted and bool(running))

    def run(self, plan: Plan, running: list[Sequence]) -> Step:
        if plan.prefill:
            new = [seq for seq, _ in plan.prefill]
            return Step(new, new, self._prefill(new))
        return Step([], running, self._decode(running))

    def release(self, running: list[Sequence], keep: list[int]) -> None:
        if not keep:
            self.batch = None
        elif self.batch is not None:
            self.batch.select(keep, trim=bool(self.mergeable))

    def reset(self) -> None:
        self.batch = None

    def _prefill(self, new: list[Sequence]) -> torch.Tensor:
        device, pad = self.lm.device, self.lm.pad_id
        width = max(len(s.prompt_ids) for s in new)
        ids = torch.tensor([[pad] * (width - len(s.prompt_ids)) + s.prompt_ids for s in new], device=device)
        mask = torch.tensor([[0] * (width - len(s.prompt_ids)) + [1] * len(s.prompt_ids) for s in new], device=device)
        cache = new_cache(self.lm.model.config)
        logits = self._forward(ids, mask, cache)
        batch = RunningBatch(cache, mask)
        if self.mergeable is None:
            self.mergeable = batch.mergeable()
            log.info(
                "KV cache %s merge: %s batching",
                "can" if self.mergeable else "cannot",
                "continuous" if self.mergeable else "static",
            )
        self.metrics.prompt_tokens.inc(sum(len(s.prompt_ids) for s in new))
        if self.batch is None:
            self.batch = batch
        else:
            self.batch.merge(batch)
        return logits

    def _decode(self, running: list[Sequence]) -> torch.Tensor:
        assert self.batch is not None
        batch = self.batch
        device = self.lm.device
        ids = torch.tensor([[s.tokens[-1]] for s in running], device=device)
        ones = torch.ones((len(running), 1), dtype=batch.mask.dtype, device=device)
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        return self._forward(ids, batch.mask, batch.cache)

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
