"""Loading a sentence-transformers model and embedding batches of text with it.

One :class:`Encoder` per (model, device) lives in the process: the ``encoder`` and ``classifier``
runtimes share its weights and its batcher, which cuts every request into batches of at most
``max_batch_size`` texts and ``max_batch_tokens`` padded tokens (``max_bulk_batch_tokens`` for bulk
texts), interactive texts first (see :mod:`ragraph_serving.batcher`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading

import numpy as np
from ragraph_client.vectors import normalize as normalize  # the runtime and bench import it from here
from ragraph_serving.batcher import MicroBatcher, Priority
from ragraph_serving.device import pick_device
from ragraph_serving.packed import pack_linears

from .bundled import resolve_model
from .settings import EncoderSettings

log = logging.getLogger("ragraph.encoder")


class Encoder:
    def __init__(self, settings: EncoderSettings) -> None:
        from sentence_transformers import SentenceTransformer

        self.ref = settings.model
        self.device = str(pick_device(settings.device))
        path = resolve_model(settings.model)
        log.info("loading encoder %s from %s on %s", settings.model, path, self.device)
        self.model = SentenceTransformer(path, device=self.device)
        self.model.eval()
        if self.device == "cpu" and settings.packed_weights:
            pack_linears(self.model)
        # The pipeline's own Normalize step (all-MiniLM-L6-v2 has one) moves to the request:
        # ``normalize=false`` then returns the pooled embedding as the model computed it.
        if len(self.model) and type(self.model[len(self.model) - 1]).__name__ == "Normalize":
            del self.model[len(self.model) - 1]
        self.max_seq_length = int(self.model.max_seq_length or 512)
        dim_of = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim_of() or 0)
        self.tokenizer = self.model.tokenizer
        # token_counts runs in a worker thread while encode_sync tokenizes in the compute thread;
        # a fast tokenizer is not safe to share across threads (its padding/truncation state is
        # per instance), so counting uses its own copy, one call at a time.
        self._counting = copy.deepcopy(self.tokenizer)
        self._counting_lock = threading.Lock()
        self._special = len(self.tokenizer("", add_special_tokens=True)["input_ids"])
        self.batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            self.encode_sync,
            settings.max_batch_size,
            settings.max_batch_time_ms / 1000.0,
            max_batch_cost=settings.max_batch_tokens,
            max_queued=settings.max_queued_texts,
            bulk_batch_cost=min(settings.max_bulk_batch_tokens, settings.max_batch_tokens),
            bulk_fn=self.encode_bulk if settings.bulk_threads else None,
        )
        self.bulk_threads = settings.bulk_threads

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens each text needs (special tokens included). A token covers at least one UTF-8
        byte, so texts short enough in bytes are not tokenised at all."""
        counts = [len(t.encode("utf-8")) + self._special for t in texts]
        long_idx = [i for i, n in enumerate(counts) if n > self.max_seq_length]
        if long_idx:
            with self._counting_lock:
                batch = [texts[i] for i in long_idx]
                ids = self._counting(batch, add_special_tokens=True, truncation=False)["input_ids"]
            for i, seq in zip(long_idx, ids, strict=True):
                counts[i] = len(seq)
        return counts

    async def count_tokens(self, texts: list[str]) -> list[int]:
        """:meth:`token_counts` off the event loop (a thousand long texts take a second to tokenise)."""
        if all(len(t.encode("utf-8")) + self._special <= self.max_seq_length for t in texts):
            return self.token_counts(texts)  # no tokenising: nothing to wait for
        return await asyncio.to_thread(self.token_counts, texts)

    def encode_bulk(self, texts: list[str]) -> list[np.ndarray]:
        """:meth:`encode_sync` on ``bulk_threads`` torch threads, leaving the other cores to the
        services that answer the same questions (the llm, the router)."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(min(self.bulk_threads, threads))
        try:
            return self.encode_sync(texts)
        finally:
            torch.set_num_threads(threads)

    def encode_sync(self, texts: list[str]) -> list[np.ndarray]:
        vectors = self.model.encode(
            texts, batch_size=max(len(texts), 1), convert_to_numpy=True, normalize_embeddings=False
        )
        return list(np.asarray(vectors, dtype=np.float32))

    async def embed(
        self, texts: list[str], priority: Priority = Priority.INTERACTIVE, tokens: list[int] | None = None
    ) -> np.ndarray:
        """Embeddings of ``texts`` (not normalised). ``tokens``: each text's token count, from
        :meth:`count_tokens` (counted here when not given); it sizes the batches."""
        counts = tokens if tokens is not None else await self.count_tokens(texts)
        costs = [min(n, self.max_seq_length) for n in counts]
        rows = await self.batcher.submit(texts, priority, costs)
        return np.stack(rows).astype(np.float32, copy=False)


_SHARED: dict[tuple[str, str], Encoder] = {}


def shared_encoder(settings: EncoderSettings) -> Encoder:
    key = (settings.model, str(pick_device(settings.device)))
    if key not in _SHARED:
        _SHARED[key] = Encoder(settings)
    return _SHARED[key]
