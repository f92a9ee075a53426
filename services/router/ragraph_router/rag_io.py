"""The ``rag`` model's tensors and parameters <-> typed requests and events (the router's one
converter between V2 messages and the executor)."""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any

from ragraph_client.errors import InvalidArgument
from ragraph_client.params import get_bool, get_int, get_str
from ragraph_client.tensors import InferRequest, InferResponse, ModelMetadata, Tensor, TensorSpec
from ragraph_retrieval import filters

from .events import DeltaEvent, Event, FinalEvent, RagRequest, SourcesEvent
from .settings import RouterSettings

INPUTS = [TensorSpec("question", "BYTES", [1])]
OUTPUTS = [
    TensorSpec("answer", "BYTES", [1]),
    TensorSpec("sources", "BYTES", [1]),
    TensorSpec("label", "BYTES", [1]),
    TensorSpec("guard", "BYTES", [1]),
]
FORWARDED = ("max_tokens", "temperature", "top_p", "top_k_tokens", "seed", "stop")


def server_metadata() -> dict[str, Any]:
    """ServerMetadata, the same over gRPC and REST."""
    try:
        version = importlib.metadata.version("ragraph")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": "ragraph-router", "version": version, "extensions": ["streaming", "generate"]}


def metadata(model: str) -> ModelMetadata:
    return ModelMetadata(model, ["1"], "ragraph-graph", INPUTS, OUTPUTS)


def read_request(request: InferRequest, settings: RouterSettings) -> RagRequest:
    tensor = request.input("question")
    if tensor.datatype != "BYTES":
        raise InvalidArgument(f"input 'question' must be BYTES, got {tensor.datatype}")
    texts = tensor.as_strings()
    if len(texts) != 1:
        raise InvalidArgument(f"input 'question' must hold exactly one element, got {len(texts)}")
    question = texts[0]
    if not question.strip():
        raise InvalidArgument("input 'question' is empty")
    if len(question.encode("utf-8")) > settings.max_question_bytes:
        raise InvalidArgument(f"input 'question' is longer than {settings.max_question_bytes} bytes")
    params = request.parameters
    top_k = get_int(params, "top_k", None)
    if top_k is not None and not 1 <= top_k <= settings.max_top_k:
        raise InvalidArgument(f"parameter 'top_k' must be between 1 and {settings.max_top_k}, got {top_k}")
    raw_filter = params.get("filter")
    if raw_filter is not None and not isinstance(raw_filter, str):
        raise InvalidArgument("parameter 'filter' must be a JSON string")
    return RagRequest(
        question=question,
        namespace=get_str(params, "namespace", None),
        top_k=top_k,
        filter=filters.load(raw_filter),
        params={k: v for k, v in params.items() if k in FORWARDED},
        debug=get_bool(params, "debug", False),
        id=request.id,
    )


def _sources_json(event: SourcesEvent | FinalEvent) -> str:
    return json.dumps([s.as_json() for s in event.sources])


def event_response(event: Event, model: str, request_id: str) -> InferResponse:
    """One streamed message: sources, a text delta, or the final one."""
    if isinstance(event, SourcesEvent):
        return InferResponse(model, [Tensor.from_strings("sources", [_sources_json(event)])], {}, request_id)
    if isinstance(event, DeltaEvent):
        return InferResponse(model, [Tensor.from_strings("answer", [event.text])], {}, request_id)
    params: dict[str, Any] = {**event.parameters, "triton_final_response": True}
    outputs = [Tensor.from_strings("label", [event.label]), Tensor.from_strings("guard", [event.guard])]
    return InferResponse(model, outputs, params, request_id)


def final_response(event: FinalEvent, model: str, request_id: str) -> InferResponse:
    """The whole answer for ModelInfer."""
    outputs = [
        Tensor.from_strings("answer", [event.answer]),
        Tensor.from_strings("sources", [_sources_json(event)]),
        Tensor.from_strings("label", [event.label]),
        Tensor.from_strings("guard", [event.guard]),
    ]
    return InferResponse(model, outputs, dict(event.parameters), request_id)
