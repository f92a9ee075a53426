"""The graph spec: YAML in, validated typed nodes out. Documented in ``docs/graph.md``.

Values flow by name: a node's outputs are stored as ``<node>.<output>``; the request's inputs
and parameters as ``request.<name>``. A node's ``inputs`` map what it sends to references; a
list of references means "the first one that has a value".
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ragraph_client.errors import InvalidArgument

NodeType = Literal["MODEL", "RETRIEVER", "ROUTER", "COMBINER", "CACHE"]
_CONDITION_OPS = {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte"}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class GraphError(InvalidArgument):
    """A graph file that cannot run; the message names the node and field."""


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


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: dict[str, Any] = Field(description="{reference: value or {$eq|$ne|$in|$nin: ...}}, all must hold.")
    goto: str


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


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    type: NodeType
    endpoint: Endpoint | None = None
    children: list[str] = Field(default_factory=list)
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict, description="Sent with every call (MODEL).")
    forward: dict[str, str] = Field(
        default_factory=dict,
        description="Request parameters passed on to this node: {request name: the node's name}; a list of "
        "names (or of one-entry mappings) passes names unchanged.",
    )
    timeout_ms: int | None = Field(None, gt=0, description="Cap on this node's share of the request deadline.")
    retries: int = Field(0, ge=0, le=5, description="Extra attempts; only idempotent (non-streaming) nodes.")
    on_error: Literal["fail", "skip", "default"] = "fail"
    default: dict[str, Any] = Field(default_factory=dict, description="Outputs used when on_error=default.")
    stream: bool = Field(False, description="MODEL: call ModelStreamInfer and pass text deltas to the caller.")
    stream_style: Literal["triton", "mlserver"] = "mlserver"
    output_guard: OutputGuard | None = Field(None, description="Streaming MODEL nodes: stop a blocked answer.")
    conditions: list[Condition] = Field(default_factory=list, description="ROUTER: first match wins.")
    default_child: str | None = Field(None, alias="default_route")
    combine: Literal["prompt", "answer", "refusal"] | None = None
    on_hit: str | None = Field(None, description="CACHE: where a hit goes; the nodes in between are skipped.")

    @model_validator(mode="before")
    @classmethod
    def _router_default(cls, data: Any) -> Any:
        # ROUTER nodes spell their fallback ``default: child``; other nodes use ``default`` for outputs.
        if isinstance(data, dict) and data.get("type") == "ROUTER" and isinstance(data.get("default"), str):
            data = {**data, "default_route": data["default"]}
            data.pop("default")
        return data

    @field_validator("forward", mode="before")
    @classmethod
    def _forward_map(cls, value: Any) -> Any:
        """``[a, b: c]`` (YAML's list form, one-entry mappings allowed) -> ``{a: a, b: c}``."""
        if not isinstance(value, list):
            return value
        out: dict[str, Any] = {}
        for item in value:
            pairs = list(item.items()) if isinstance(item, dict) else [(item, item)]
            for request_name, node_name in pairs:
                if request_name in out:
                    raise ValueError(f"request parameter {request_name!r} is forwarded twice")
                out[request_name] = node_name
        return out

    def refs(self) -> list[str]:
        out: list[str] = []
        for value in self.inputs.values():
            out.extend([value] if isinstance(value, str) else value)
        out.extend(c_ref for c in self.conditions for c_ref in c.when)
        return out

    def routes(self) -> list[str]:
        targets = [c.goto for c in self.conditions]
        if self.default_child:
            targets.append(self.default_child)
        return targets


class Graph(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "rag"
    root: str | None = None
    nodes: list[Node]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise GraphError(f"graph {self.name}: no node named {name!r}")

    @property
    def entry(self) -> Node:
        return self.node(self.root) if self.root else self.nodes[0]

    def next_nodes(self, node: Node) -> list[str]:
        if node.type == "CACHE" and node.on_hit:
            return [*node.children, node.on_hit]
        return node.routes() if node.type == "ROUTER" else node.children


def _expand(text: str) -> str:
    return _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), text)


def _check(graph: Graph) -> None:
    names = [n.name for n in graph.nodes]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise GraphError(f"graph {graph.name}: duplicate node name(s) {sorted(dupes)}")
    if not graph.nodes:
        raise GraphError(f"graph {graph.name}: no nodes")
    graph.entry  # noqa: B018 - raises when root names no node
    known = set(names)
    caches = [n.name for n in graph.nodes if n.type == "CACHE"]
    if len(caches) > 1:
        raise GraphError(f"graph {graph.name}: at most one CACHE node, found {caches}")
    for node in graph.nodes:
        where = f"graph {graph.name}, node {node.name!r}"
        for target in [*node.children, *node.routes(), *([node.on_hit] if node.on_hit else [])]:
            if target not in known:
                raise GraphError(f"{where}: child/route {target!r} is not a node")
        for ref in node.refs():
            head = ref.split(".", 1)[0]
            if "." not in ref or (head != "request" and head not in known):
                raise GraphError(f"{where}: reference {ref!r} must be request.<name> or <node>.<output>")
        if node.type == "MODEL" and not (node.endpoint and node.endpoint.url and node.endpoint.model):
            raise GraphError(f"{where}: MODEL nodes need endpoint.url and endpoint.model")
        if node.type == "RETRIEVER" and not (node.endpoint and node.endpoint.store):
            raise GraphError(f"{where}: RETRIEVER nodes need endpoint.store")
        for condition in node.conditions:
            for ref, spec in condition.when.items():
                if isinstance(spec, dict) and not set(spec) <= _CONDITION_OPS:
                    raise GraphError(
                        f"{where}: condition on {ref!r} may use {sorted(_CONDITION_OPS)}, got {sorted(spec)}"
                    )
        if node.type == "ROUTER" and not node.routes():
            raise GraphError(f"{where}: ROUTER nodes need conditions or a default route")
        if node.type == "COMBINER" and node.combine is None:
            raise GraphError(f"{where}: COMBINER nodes need combine: prompt | answer | refusal")
        targets = list(node.forward.values())
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise GraphError(f"{where}: forward: more than one request parameter goes to {twice[0]!r}")
        if node.forward and node.type != "MODEL":
            raise GraphError(f"{where}: forward is only for MODEL nodes")
        if node.output_guard and not node.stream:
            raise GraphError(f"{where}: output_guard needs a streaming node (stream: true)")
        if node.stream and node.type != "MODEL":
            raise GraphError(f"{where}: only MODEL nodes stream")
        if node.retries and (node.stream or node.type in ("ROUTER", "COMBINER")):
            raise GraphError(
                f"{where}: retries are only allowed on idempotent nodes (non-streaming MODEL, RETRIEVER, CACHE)"
            )
        if node.on_error == "default" and not node.default:
            raise GraphError(f"{where}: on_error: default needs a default: {{output: value}} block")
        if node.on_hit is not None and node.type != "CACHE":
            raise GraphError(f"{where}: on_hit is only for CACHE nodes")
        if node.type == "CACHE":
            _check_cache(graph, node, where)
    _check_acyclic(graph)


def _check_cache(graph: Graph, node: Node, where: str) -> None:
    if not (node.endpoint and node.endpoint.store):
        raise GraphError(f"{where}: CACHE nodes need endpoint.store")
    if node.endpoint.url or node.endpoint.model:
        raise GraphError(f"{where}: CACHE nodes take endpoint.store only, not endpoint.url/model")
    if set(node.inputs) != {"vector"}:
        raise GraphError(f"{where}: CACHE nodes need inputs: {{vector: <node>.embedding}} and nothing else")
    if not node.on_hit:
        raise GraphError(f"{where}: CACHE nodes need on_hit: the node a hit goes to (the answer COMBINER)")
    try:
        CacheParameters.model_validate(node.parameters)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise GraphError(f"{where}: parameters.{field}: {first['msg']}") from exc
    answer = f"{node.name}.answer"
    readers = [n for n in graph.nodes if n.combine == "answer" and answer in n.refs()]
    if not readers:
        raise GraphError(f"{where}: on_hit: no combine: answer node reads {answer}, so a hit would answer nothing")


def _check_acyclic(graph: Graph) -> None:
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 1:
            raise GraphError(f"graph {graph.name}: cycle {' -> '.join([*path, name])}")
        if state.get(name) == 2:
            return
        state[name] = 1
        for child in graph.next_nodes(graph.node(name)):
            visit(child, [*path, name])
        state[name] = 2

    visit(graph.entry.name, [])
    streaming = [n.name for n in graph.nodes if n.stream]
    if len(streaming) > 1:
        raise GraphError(f"graph {graph.name}: at most one streaming node, found {streaming}")


def parse(text: str, source: str = "<graph>") -> Graph:
    try:
        data = yaml.safe_load(_expand(text))
    except yaml.YAMLError as exc:
        raise GraphError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise GraphError(f"{source}: expected a mapping with 'nodes'")
    try:
        graph = Graph.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise GraphError(f"{source}: {where}: {first['msg']}") from exc
    _check(graph)
    return graph


def shipped() -> list[str]:
    """Names of the graphs shipped with the router (``rag``, ``rag-cached``)."""
    folder = resources.files("ragraph_router").joinpath("graphs")
    return sorted(f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml"))


def load(path: str | Path | None = None) -> Graph:
    """A graph file; or a shipped graph by name (``rag-cached``: a name with no file of that
    name); the shipped default ``rag`` graph when ``path`` is None."""
    if path is None:
        text = resources.files("ragraph_router").joinpath("graphs/rag.yaml").read_text()
        return parse(text, "default rag graph")
    file = Path(path)
    if not file.exists():
        if str(path) in shipped():
            text = resources.files("ragraph_router").joinpath(f"graphs/{path}.yaml").read_text()
            return parse(text, f"shipped {path} graph")
        raise GraphError(f"graph file {file} does not exist (shipped graphs, by name: {', '.join(shipped())})")
    return parse(file.read_text(), str(file))


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
