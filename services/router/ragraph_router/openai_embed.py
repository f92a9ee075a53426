"""The OpenAI-compatible API's embeddings: ``POST /v1/embeddings`` through the graph's encoder
node (the node whose output is a retriever's ``vector``), admitted and counted as a graph run is
(``openai_edge``). The model is named as on that node (``encoder`` in the shipped graphs)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
from ragraph_client.errors import NotFound
from ragraph_client.headers import REQUEST_ID_HEADER
from ragraph_retrieval.tokens import TokenCounter, encoder_counter

from .edge import Edge
from .graph import Graph
from .nodes import ModelNode, RetrieverNode
from .openai_edge import admitted
from .openai_io import BadField

FIELDS = ("model", "input", "encoding_format", "user", "dimensions")
FORMATS = ("float", "base64")


def encoder_node(graph: Graph) -> ModelNode | None:
    """The MODEL node whose output a retriever takes as its ``vector``."""
    refs = [n.inputs.get("vector") for n in graph.of(RetrieverNode)]
    names = {ref.split(".")[0] for ref in refs if isinstance(ref, str)}
    return next((n for n in graph.of(ModelNode) if n.name in names), None)


def read_body(body: Mapping[str, Any]) -> tuple[str, list[str], str, int | None]:
    """(model, texts, encoding_format, dimensions); BadField naming the first bad field."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadField(unknown[0], f"unknown or unsupported field '{unknown[0]}' (see docs/openai.md for the fields)")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadField("model", "'model' must be a non-empty string")
    given = body.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadField("input", "'input' must be a string or a non-empty array of strings (token arrays are not taken)")
    if any(not t for t in texts):
        raise BadField("input", "'input' holds an empty string")
    encoding = body.get("encoding_format") or "float"
    if encoding not in FORMATS:
        raise BadField("encoding_format", f"'encoding_format' must be float or base64, got {encoding!r}")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise BadField("user", "'user' must be a string")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise BadField("dimensions", "'dimensions' must be a positive integer")
    return model, texts, encoding, dims


def _encode(vector: np.ndarray, encoding: str) -> Any:
    row = vector.astype("<f4")
    return base64.b64encode(row.tobytes()).decode("ascii") if encoding == "base64" else row.tolist()


class Embeddings:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.node = encoder_node(edge.service.graph)
        self._counter: TokenCounter | None = None

    @property
    def names(self) -> list[str]:
        return [self.node.target[1]] if self.node else []

    def _count(self, texts: list[str]) -> int:
        if self._counter is None:
            self._counter, _ = encoder_counter()
        return sum(self._counter.count_many(texts))

    async def create(self, body: Mapping[str, Any], request_id: str, headers: Mapping[str, str]) -> dict[str, Any]:
        """The embeddings response (OpenAI's shape, ``usage.prompt_tokens`` counted with the encoder's tokenizer)."""
        async with admitted(self.edge, headers, "OpenAIEmbeddings", request_id) as call:
            model, texts, encoding, dims = read_body(body)
            if model not in self.names:
                raise NotFound(f"unknown model '{model}': embeddings come from {', '.join(self.names) or 'no node'}")
            node = self.node
            assert node is not None and node.endpoint is not None
            url, name = node.target
            client = self.edge.service.clients[url]
            call_headers = self.edge.tracing.inject(call.span, {**node.endpoint.headers, REQUEST_ID_HEADER: request_id})
            timeout = (node.timeout_ms or self.edge.service.settings.default_timeout_ms) / 1000
            reply = await client.infer(name, {"text": texts}, {}, timeout=timeout, headers=call_headers)
            vectors = np.asarray(reply.output("embedding").as_numpy(), dtype=np.float32).reshape(len(texts), -1)
            if dims is not None and dims != vectors.shape[1]:  # the encoder's size is known once it answers
                raise BadField("dimensions", f"'dimensions' can only be the encoder's own, {vectors.shape[1]}")
            tokens = self._count(texts)
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, encoding)} for i, v in enumerate(vectors)]
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
