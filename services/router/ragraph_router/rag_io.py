"""The ``rag`` model's tensors and parameters <-> typed requests and events (the router's one
converter between V2 messages and the executor)."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Collection, Sequence
from typing import Any

from ragraph_client.errors import InvalidArgument, NotFound
from ragraph_client.tensors import InferRequest, InferResponse, ModelMetadata, Tensor, TensorSpec

from . import parameters
from .events import DeltaEvent, Event, FinalEvent, RagRequest, SourcesEvent
from .settings import RouterSettings

INPUTS = [TensorSpec("question", "BYTES", [1])]
OUTPUTS = [
    TensorSpec("answer", "BYTES", [1]),
    TensorSpec("sources", "BYTES", [1]),
    TensorSpec("label", "BYTES", [1]),
    TensorSpec("guard", "BYTES", [1]),
]
VERSIONS = ("1",)


def server_metadata() -> dict[str, Any]:
    """ServerMetadata, the same over gRPC and REST."""
    try:
        version = importlib.metadata.version("ragraph")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": "ragraph-router", "version": version, "extensions": ["streaming", "generate"]}


def metadata(model: str) -> ModelMetadata:
    return ModelMetadata(model, list(VERSIONS), "ragraph-graph", INPUTS, OUTPUTS)


def check_version(model: str, version: str) -> None:
    """NOT_FOUND unless ``version`` is empty (the latest) or one the metadata lists."""
    if version and version not in VERSIONS:
        raise NotFound(f"model '{model}' has no version '{version}' (versions: {', '.join(VERSIONS)})")


def check_outputs(model: str, wanted: Sequence[str]) -> None:
    """INVALID_ARGUMENT for a requested output the model does not have (as over REST)."""
    names = [spec.name for spec in OUTPUTS]
    for i, name in enumerate(wanted):
        if name not in names:
            raise InvalidArgument(
                f"outputs[{i}].name: model '{model}' has no output '{name}' (it has {', '.join(names)})"
            )
        if list(wanted).count(name) > 1:
            raise InvalidArgument(f"outputs[{i}].name: output '{name}' is asked for more than once")


def read_request(request: InferRequest, settings: RouterSettings, forwarded: Collection[str]) -> RagRequest:
    """The typed request; ``forwarded`` are the request parameters the graph's nodes take."""
    check_outputs(request.model_name, request.outputs)
    tensor = request.input("question")
    unknown = sorted({t.name for t in request.inputs} - {"question"})
    if unknown:
        raise InvalidArgument(f"unknown input '{unknown[0]}': the rag model takes one input, 'question'")
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
    params = parameters.read(request.parameters, forwarded, settings.max_top_k)
    return RagRequest(
        question=question,
        namespace=params.namespace,
        top_k=params.top_k,
        filter=params.filter,
        params=params.forwarded,
        debug=params.debug,
        id=request.id,
        outputs=list(request.outputs),
    )


def _sources_json(event: SourcesEvent | FinalEvent) -> str:
    return json.dumps([s.as_json() for s in event.sources])


def _only(outputs: list[Tensor], wanted: Sequence[str]) -> list[Tensor]:
    return [t for t in outputs if not wanted or t.name in wanted]


def event_response(event: Event, model: str, request_id: str, wanted: Sequence[str] = ()) -> InferResponse | None:
    """One streamed message: sources, a text delta, or the final one; None for a message whose
    one output the request did not ask for (``wanted``: the request's outputs, empty for all).
    The final message always goes out: it carries the parameters and ``triton_final_response``."""
    if isinstance(event, SourcesEvent | DeltaEvent):
        tensor = (
            Tensor.from_strings("sources", [_sources_json(event)])
            if isinstance(event, SourcesEvent)
            else Tensor.from_strings("answer", [event.text])
        )
        return InferResponse(model, [tensor], {}, request_id) if _only([tensor], wanted) else None
    params: dict[str, Any] = {**event.parameters, "triton_final_response": True}
    outputs = [Tensor.from_strings("label", [event.label]), Tensor.from_strings("guard", [event.guard])]
    return InferResponse(model, _only(outputs, wanted), params, request_id)


def final_response(event: FinalEvent, model: str, request_id: str, wanted: Sequence[str] = ()) -> InferResponse:
    """The whole answer for ModelInfer: every output, or those the request asked for."""
    outputs = [
        Tensor.from_strings("answer", [event.answer]),
        Tensor.from_strings("sources", [_sources_json(event)]),
        Tensor.from_strings("label", [event.label]),
        Tensor.from_strings("guard", [event.guard]),
    ]
    return InferResponse(model, _only(outputs, wanted), dict(event.parameters), request_id)
