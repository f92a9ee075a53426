"""The graph spec: YAML in, validated typed nodes out. Documented in ``docs/graph.md``.

Values flow by name: a node's outputs are stored as ``<node>.<output>``; the request's inputs
and parameters as ``request.<name>``. A node's ``inputs`` map what it sends to references; a
list of references means "the first one that has a value". The nodes themselves, one model per
type, are in :mod:`.nodes`; here is what spans them: the walk's successors and the checks.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from ragraph_client.errors import InvalidArgument

from .node_parts import CONDITION_OPS, CacheParameters
from .nodes import (
    CacheNode,
    CombinerNode,
    ModelNode,
    Node,
    NodeBase,
    NodeType,
    RetrieverNode,
    RouterNode,
)
from .values import REQUEST, Values, output_ref

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TYPES = set(get_args(NodeType))
N = TypeVar("N", bound=NodeBase)


class GraphError(InvalidArgument):
    """A graph file that cannot run; the message names the node and field."""


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

    def of(self, kind: type[N]) -> list[N]:
        """The nodes of one type, in graph order."""
        return [n for n in self.nodes if isinstance(n, kind)]

    @property
    def entry(self) -> Node:
        return self.node(self.root) if self.root else self.nodes[0]

    @property
    def generator(self) -> ModelNode | None:
        """The streaming node (at most one): its deltas are the answer's text."""
        return next((n for n in self.of(ModelNode) if n.stream), None)

    @property
    def cache(self) -> CacheNode | None:
        """The CACHE node (at most one)."""
        return next(iter(self.of(CacheNode)), None)

    def next_nodes(self, node: NodeBase, values: Values | None = None) -> list[str]:
        """The nodes the walk goes to after ``node``: in this run (``values``), or every one it
        may go to (None). A ROUTER takes one route; a CACHE hit jumps to ``on_hit``, skipping the
        nodes in between; any other node goes on to its children."""
        if isinstance(node, RouterNode):
            return node.routes() if values is None else [node.choose(values.get)]
        if isinstance(node, CacheNode) and node.on_hit:
            if values is None:
                return [*node.children, node.on_hit]
            if values.hit(node.name):
                return [node.on_hit]
        return node.children


def _expand(text: str) -> str:
    return _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), text)


class _Head(BaseModel):
    """A node's name and type, read alone: what is wrong when its type picks no node model."""

    model_config = ConfigDict(extra="allow")
    name: str
    type: NodeType


def _first_error(exc: ValidationError, data: dict[str, Any]) -> str:
    """``<where>: <what>`` of the first error, where a node's fields are ``nodes.<i>.<field>``
    whatever its type (the union's tag is left out of the place)."""
    first = exc.errors()[0]
    loc, msg = list(first["loc"]), first["msg"]
    if loc[:1] == ["nodes"] and len(loc) == 2 and first["type"].startswith(("union_tag", "model_attributes")):
        raw = data["nodes"][loc[1]]
        if not isinstance(raw, dict):
            msg = "Input should be a valid dictionary or instance of Node"
        else:
            try:
                _Head.model_validate(raw)
            except ValidationError as head:
                loc, msg = [*loc, *head.errors()[0]["loc"]], head.errors()[0]["msg"]
    elif loc[:1] == ["nodes"] and len(loc) > 2 and loc[2] in _TYPES:
        del loc[2]
    return f"{'.'.join(str(p) for p in loc)}: {msg}"


def _check(graph: Graph) -> None:
    names = [n.name for n in graph.nodes]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise GraphError(f"graph {graph.name}: duplicate node name(s) {sorted(dupes)}")
    if not graph.nodes:
        raise GraphError(f"graph {graph.name}: no nodes")
    graph.entry  # noqa: B018 - raises when root names no node
    caches = [n.name for n in graph.of(CacheNode)]
    if len(caches) > 1:
        raise GraphError(f"graph {graph.name}: at most one CACHE node, found {caches}")
    for node in graph.nodes:
        _check_node(graph, node, set(names), f"graph {graph.name}, node {node.name!r}")
    _check_acyclic(graph)


def _check_node(graph: Graph, node: Node, known: set[str], where: str) -> None:
    on_hit = node.given("on_hit")
    stray = [on_hit] if on_hit and not isinstance(node, CacheNode) else []  # reported below, once it exists
    for target in [*node.children, *graph.next_nodes(node), *stray]:
        if target not in known:
            raise GraphError(f"{where}: child/route {target!r} is not a node")
    for ref in node.refs():
        head = ref.split(".", 1)[0]
        if "." not in ref or (head != REQUEST and head not in known):
            raise GraphError(f"{where}: reference {ref!r} must be request.<name> or <node>.<output>")
    if isinstance(node, ModelNode) and not (node.endpoint and node.endpoint.url and node.endpoint.model):
        raise GraphError(f"{where}: MODEL nodes need endpoint.url and endpoint.model")
    if isinstance(node, RetrieverNode) and not (node.endpoint and node.endpoint.store):
        raise GraphError(f"{where}: RETRIEVER nodes need endpoint.store")
    if isinstance(node, RouterNode):
        for condition in node.conditions:
            for ref, spec in condition.when.items():
                if isinstance(spec, dict) and not set(spec) <= CONDITION_OPS:
                    raise GraphError(
                        f"{where}: condition on {ref!r} may use {sorted(CONDITION_OPS)}, got {sorted(spec)}"
                    )
        if not node.routes():
            raise GraphError(f"{where}: ROUTER nodes need conditions or a default route")
    if isinstance(node, CombinerNode) and node.combine is None:
        raise GraphError(f"{where}: COMBINER nodes need combine: prompt | answer | refusal")
    if isinstance(node, ModelNode):
        targets = list(node.forward.values())
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise GraphError(f"{where}: forward: more than one request parameter goes to {twice[0]!r}")
    if node.given("forward") and not isinstance(node, ModelNode):
        raise GraphError(f"{where}: forward is only for MODEL nodes")
    if node.given("output_guard") is not None and not node.given("stream"):
        raise GraphError(f"{where}: output_guard needs a streaming node (stream: true)")
    if node.given("stream") and not isinstance(node, ModelNode):
        raise GraphError(f"{where}: only MODEL nodes stream")
    if node.retries and (node.stream or not node.remote):
        raise GraphError(
            f"{where}: retries are only allowed on idempotent nodes (non-streaming MODEL, RETRIEVER, CACHE)"
        )
    if node.on_error == "default" and not node.default:
        raise GraphError(f"{where}: on_error: default needs a default: {{output: value}} block")
    if on_hit is not None and not isinstance(node, CacheNode):
        raise GraphError(f"{where}: on_hit is only for CACHE nodes")
    if isinstance(node, CacheNode):
        _check_cache(graph, node, where)


def _check_cache(graph: Graph, node: CacheNode, where: str) -> None:
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
    answer = output_ref(node.name, "answer")
    readers = [n for n in graph.of(CombinerNode) if n.combine == "answer" and answer in n.refs()]
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
        raise GraphError(f"{source}: {_first_error(exc, data)}") from exc
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
