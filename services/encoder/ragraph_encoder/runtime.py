"""MLServer runtimes of the encoder service: ``encoder`` (embeddings) and ``classifier``."""

from __future__ import annotations

import numpy as np
from ragraph_client.errors import InvalidArgument
from ragraph_client.params import check_known, get_bool, get_str
from ragraph_client.tensors import InferRequest, InferResponse, Tensor, TensorSpec
from ragraph_serving.batcher import Priority
from ragraph_serving.compute import run_compute
from ragraph_serving.runtime import RagraphRuntime

from .classifier import LabelSet, pick, read_exemplars
from .model import Encoder, normalize, shared_encoder
from .settings import EncoderSettings


def _settings(runtime: RagraphRuntime) -> EncoderSettings:
    extra = (runtime.settings.parameters.extra if runtime.settings.parameters else None) or {}
    return EncoderSettings(**extra)


def read_texts(request: InferRequest, settings: EncoderSettings) -> list[str]:
    """The ``text`` input as strings: BYTES, shape [N] or [N, 1], valid UTF-8, within limits."""
    tensor = request.input("text")
    if tensor.datatype != "BYTES":
        raise InvalidArgument(f"input 'text' must be BYTES, got {tensor.datatype}")
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InvalidArgument(f"input 'text' must have shape [N] or [N, 1], got {tensor.shape}")
    texts = tensor.as_strings()
    if not texts:
        raise InvalidArgument("input 'text' is an empty batch")
    if len(texts) > settings.max_texts:
        raise InvalidArgument(f"input 'text' holds {len(texts)} texts, more than the limit of {settings.max_texts}")
    size = sum(len(t) for t in tensor.as_bytes())
    if size > settings.max_request_bytes:
        raise InvalidArgument(f"input 'text' holds {size} bytes, more than the limit of {settings.max_request_bytes}")
    return texts


PRIORITIES = {"interactive": Priority.INTERACTIVE, "bulk": Priority.BULK}
ENCODER_PARAMETERS = ("normalize", "truncate", "priority")
CLASSIFIER_PARAMETERS = ("labelset", "priority")


def read_priority(request: InferRequest) -> Priority:
    """The ``priority`` parameter: ``interactive`` (the default: a question waiting for its
    answer) or ``bulk`` (ingest). Interactive texts go into batches before any bulk text."""
    value = get_str(request.parameters, "priority", "interactive") or ""
    if value not in PRIORITIES:
        raise InvalidArgument(f"parameter 'priority' must be 'interactive' or 'bulk', got {value!r}")
    return PRIORITIES[value]


class EncoderRuntime(RagraphRuntime):
    """V2 model ``encoder``: ``text`` BYTES [N] -> ``embedding`` FP32 [N, D].

    Request parameters: ``normalize`` (default true), ``truncate`` (default true; false turns an
    over-long text into INVALID_ARGUMENT), ``priority`` (``interactive``, the default, or
    ``bulk``). Response parameter ``truncated``: how many texts were cut to the model's
    max_seq_length."""

    async def load(self) -> bool:
        self.config = _settings(self)
        self.encoder: Encoder = await run_compute(shared_encoder, self.config)
        self.declare(
            [TensorSpec("text", "BYTES", [-1])],
            [TensorSpec("embedding", "FP32", [-1, self.encoder.dim])],
        )
        return True

    async def infer(self, request: InferRequest) -> InferResponse:
        check_known(request.parameters, ENCODER_PARAMETERS, "encoder")
        texts = read_texts(request, self.config)
        do_normalize = get_bool(request.parameters, "normalize", True)
        truncate = get_bool(request.parameters, "truncate", True)
        priority = read_priority(request)
        tokens = await self.encoder.count_tokens(texts)
        over = [n > self.encoder.max_seq_length for n in tokens]
        if not truncate and any(over):
            first = over.index(True)
            raise InvalidArgument(
                f"input 'text': element {first} is longer than the model's max_seq_length of "
                f"{self.encoder.max_seq_length} tokens and truncate=false"
            )
        vectors = await self.encoder.embed(texts, priority, tokens)
        if do_normalize:
            vectors = normalize(vectors)
        out = Tensor.from_numpy("embedding", vectors.astype(np.float32))
        return InferResponse(self.name, [out], {"truncated": int(sum(over))})


class ClassifierRuntime(RagraphRuntime):
    """V2 model ``classifier``: ``text`` BYTES [N] -> ``label`` BYTES [N], ``score`` FP32 [N].

    Request parameters: ``labelset`` picks one of the configured label sets (default from
    settings; the shipped ones are ``query_guard`` and ``answer_class``), ``priority`` as for
    ``encoder``."""

    async def load(self) -> bool:
        self.config = _settings(self)
        self.encoder = await run_compute(shared_encoder, self.config)
        self.labelsets: dict[str, LabelSet] = {}
        for name, path in self.config.labelsets.items():
            pairs = read_exemplars(path)
            vectors = normalize(np.stack(await run_compute(self.encoder.encode_sync, [text for text, _ in pairs])))
            self.labelsets[name] = LabelSet.build(name, pairs, vectors)
        self.declare(
            [TensorSpec("text", "BYTES", [-1])],
            [TensorSpec("label", "BYTES", [-1]), TensorSpec("score", "FP32", [-1])],
        )
        return True

    async def infer(self, request: InferRequest) -> InferResponse:
        check_known(request.parameters, CLASSIFIER_PARAMETERS, "classifier")
        texts = read_texts(request, self.config)
        labelset = pick(self.labelsets, get_str(request.parameters, "labelset", self.config.default_labelset) or "")
        vectors = normalize(await self.encoder.embed(texts, read_priority(request)))
        labels, scores = labelset.classify(vectors, texts)
        return InferResponse(
            self.name,
            [Tensor.from_strings("label", labels), Tensor.from_numpy("score", scores)],
            {"labelset": labelset.name},
        )
