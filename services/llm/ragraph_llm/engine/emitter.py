"""A step's logits turned into each sequence's next token, its text and its events."""

from __future__ import annotations

import logging
import time

import torch

from ..metrics import EngineMetrics
from .outbox import Outbox
from .sampling import choose
from .sequence import Event, Sequence

log = logging.getLogger("ragraph.llm.engine")


class Emitter:
    """Chooses each row's token (:mod:`.sampling`), turns it into a text delta (:mod:`.textstream`)
    and posts the sequence's events: a delta, or the last one with the totals once EOS, a stop
    string or ``max_tokens`` ends it. Counts tokens, time to first token, inter-token times and
    finishes."""

    def __init__(self, eos_ids: set[int], metrics: EngineMetrics, outbox: Outbox) -> None:
        self.eos_ids = eos_ids
        self.metrics = metrics
        self.outbox = outbox

    def emit(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        """``logits`` [len(seqs), vocab]: row i gives ``seqs[i]`` its next token."""
        greedy = logits.argmax(dim=-1).tolist()
        now = time.monotonic()
        for row, seq in enumerate(seqs):
            if seq.cancelled:
                continue
            try:
                plain = seq.params.greedy and not seq.params.penalized
                token = greedy[row] if plain else choose(logits[row], seq.params, seq.generator, seq.tokens)
            except Exception as exc:  # one row's sampling bug fails that request only
                log.exception("sampling failed for sequence %d", seq.id)
                self.count_finish(seq, "error")
                self.outbox.post(seq, Event("", error=exc))
                continue
            seq.tokens.append(token)
            if seq.first_token_at == 0.0:
                seq.first_token_at = now
                self.metrics.ttft.observe(now - seq.submitted)
            else:
                self.metrics.inter_token.observe(now - seq.last_token_at)
            seq.last_token_at = now
            self.metrics.tokens.inc()
            if token in self.eos_ids:
                self._finish(seq, "stop", "")
                continue
            delta = seq.stream.push(token)
            if seq.stream.stopped:
                self._finish(seq, "stop", delta)
            elif len(seq.tokens) >= seq.params.max_tokens:
                self._finish(seq, "length", delta)
            elif delta:
                self.outbox.post(seq, Event(delta))

    def count_finish(self, seq: Sequence, reason: str) -> None:
        seq.finish_reason = reason
        self.metrics.finished.labels(reason=reason).inc()

    def _finish(self, seq: Sequence, reason: str, text: str) -> None:
        if not seq.stream.stopped:  # EOS or length: flush text held back for a possible stop string
            text += seq.stream.finish()
        self.count_finish(seq, reason)
        self.outbox.post(
            seq,
            Event(
                text,
                reason,
                len(seq.prompt_ids),
                len(seq.tokens),
                (seq.first_token_at - seq.submitted) * 1000.0,
            ),
        )
