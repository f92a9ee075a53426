"""What a graph run takes and yields: the typed request, and the events streamed out of it
(the sources once retrieval is done, each text delta, the final result)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ragraph_retrieval import filters

from .prompt import Source


@dataclass
class RagRequest:
    question: str
    namespace: str | None = None
    top_k: int | None = None
    filter: filters.Node | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the parameters the graph forwards, checked
    debug: bool = False
    id: str = ""
    outputs: list[str] = field(default_factory=list)  # the outputs asked for; empty: all
    trace: Any = None  # the request's span (None when tracing is off): node spans hang under it


@dataclass
class SourcesEvent:
    sources: list[Source]


@dataclass
class DeltaEvent:
    text: str


@dataclass
class FinalEvent:
    answer: str
    sources: list[Source]
    label: str
    guard: str
    parameters: dict[str, Any]


Event = SourcesEvent | DeltaEvent | FinalEvent
