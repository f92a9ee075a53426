"""Embedding texts through the encoder service (V2 model ``encoder``), in batches.

Ingest and search embed remotely, never in-process: the vectors in the store then come from the
same service (and model) that embeds questions at query time. Requests go with
``truncate=false``, so a chunk the service would truncate is an error, not a silently shorter
vector, and with ``priority=bulk`` by default, so the encoder serves the router's interactive
calls first while an ingest runs (``search`` embeds its one query as ``interactive``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ragraph_client.client import InferenceClient
from ragraph_client.headers import service_token_headers

DEFAULT_ENCODER_URL = "127.0.0.1:8101"


class EncoderEmbedder:
    def __init__(
        self,
        url: str = DEFAULT_ENCODER_URL,
        model: str = "encoder",
        batch_size: int = 64,
        in_flight: int = 2,
        timeout: float = 120.0,
        priority: str = "bulk",
        token: str | None = None,
    ) -> None:
        self.url = url
        self.model = model
        self.batch_size = batch_size
        self.in_flight = max(1, in_flight)
        self.priority = priority
        self.client = InferenceClient(url, timeout=timeout, headers=service_token_headers(token))
        self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="embed")

    def _one(self, texts: Sequence[str]) -> np.ndarray:
        params: dict[str, bool | str] = {"normalize": True, "truncate": False, "priority": self.priority}
        response = self.client.infer(self.model, {"text": list(texts)}, params)
        return response.output("embedding").as_numpy().astype(np.float32, copy=False)

    def embed(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Vectors for ``texts`` in order; batches are sent ``in_flight`` at a time so the service
        computes one while the next is on the wire."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]

        def one(batch: Sequence[str]) -> np.ndarray:
            vectors = self._one(batch)
            if on_batch is not None:
                on_batch(len(batch))
            return vectors

        if len(batches) == 1:
            return one(batches[0])
        return np.concatenate(list(self._pool.map(one, batches)))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.client.close()

    def __enter__(self) -> EncoderEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
