"""The parts of a node's spec that are models of their own: its endpoint (and the gRPC metadata
sent with it), a ROUTER's conditions, a streaming node's output guard, a CACHE node's parameters."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

CONDITION_OPS = {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte"}
_HEADER_NAME = re.compile(r"^[0-9a-z_.-]+$")
_OWN_HEADERS = {"x-ragraph-service-token", "x-request-id", "traceparent", "tracestate", "authorization"}


def checked_headers(headers: dict[str, str]) -> dict[str, str]:
    """Per-node gRPC metadata: valid lowercase names, printable values, none the router sets itself."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name) or name.startswith("grpc-") or name.endswith("-bin"):
            raise ValueError(f"header {name!r}: a name is lowercase letters, digits, '-', '_', '.', not grpc-*/*-bin")
        if name in _OWN_HEADERS:
            raise ValueError(f"header {name!r} is set by the router itself")
        if not value.isprintable():
            raise ValueError(f"header {name!r}: the value must be printable text")
    return headers


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, description="host:port of a V2 gRPC server (MODEL nodes).")
    model: str | None = Field(None, description="V2 model name on that server.")
    store: str | None = Field(None, description="Store URI (RETRIEVER, CACHE nodes): local://PATH or pinecone://INDEX.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="gRPC metadata sent with every call to this node (MODEL nodes), e.g. {seldon-model: llm} "
        "for a model behind Seldon Core 2's mesh; names lowercase, not grpc-* or the router's own.",
    )

    @field_validator("headers")
    @classmethod
    def _metadata_names(cls, headers: dict[str, str]) -> dict[str, str]:
        return checked_headers(headers)

    def label(self) -> str | None:
        """``model@url``, else the store URI: how errors name the node's far end."""
        if self.model and self.url:
            return f"{self.model}@{self.url}"
        return self.store


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: dict[str, Any] = Field(description="{reference: value or {$eq|$ne|$in|$nin: ...}}, all must hold.")
    goto: str

    def met(self, value_of: Callable[[str], Any]) -> bool:
        return all(holds(value_of(ref), spec) for ref, spec in self.when.items())


def holds(value: Any, spec: Any) -> bool:
    """ROUTER conditions: a bare value means equality; ``$eq $ne $in $nin $gt $gte $lt $lte``
    otherwise (comparisons only hold for numbers)."""
    if not isinstance(spec, dict):
        return bool(value == spec)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ops = {
        "$eq": lambda v: value == v,
        "$ne": lambda v: value != v,
        "$in": lambda v: value in v,
        "$nin": lambda v: value not in v,
        "$gt": lambda v: number and value > v,
        "$gte": lambda v: number and value >= v,
        "$lt": lambda v: number and value < v,
        "$lte": lambda v: number and value <= v,
    }
    return all(ops[op](arg) for op, arg in spec.items())


class OutputGuard(BaseModel):
    """A classifier run over a sliding window of a streaming node's answer as it grows; a
    blocked label stops the stream (the LLM call is cancelled) with a terminal message."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="host:port of the V2 server with the classifier.")
    model: str = "classifier"
    headers: dict[str, str] = Field(default_factory=dict, description="gRPC metadata sent with every call.")
    labelset: str = "answer_class"
    block_labels: list[str] = Field(min_length=1)
    threshold: float = Field(0.0, ge=0.0, le=1.0, description="Least classifier score that blocks.")
    window_chars: int = Field(400, gt=0, description="How much of the answer's tail is classified.")
    every_chars: int = Field(120, gt=0, description="Classify again after this many new characters.")
    message: str = " [stopped: the answer was blocked by the output guard]"

    @field_validator("headers")
    @classmethod
    def _metadata_names(cls, headers: dict[str, str]) -> dict[str, str]:
        return checked_headers(headers)


class CacheParameters(BaseModel):
    """A CACHE node's ``parameters`` (docs/graph.md, "Semantic cache")."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(0.95, gt=0.0, le=1.0, description="Least cosine similarity served as a hit.")
    ttl_s: float = Field(3600.0, gt=0.0, description="Seconds an answer is served after it was stored.")
    namespace: str = Field("__cache__", min_length=1, description="Store namespace (the request's is appended).")
    version: str = Field("", description="Part of every key: change it to drop every cached answer.")
