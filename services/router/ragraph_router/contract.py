"""The contract check: before the router reports ready (and on demand, ``ragraph graph check``),
every MODEL node's ModelMetadata is fetched and each edge of the graph is verified against it:
the tensors a node is sent (names, datatype, rank) and the outputs other nodes read from it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ragraph_client.client import AsyncInferenceClient
from ragraph_client.errors import RagraphError
from ragraph_client.tensors import ModelMetadata, TensorSpec

from .graph import Graph
from .nodes import ModelNode

# What the router sends for an input fed from a graph value: text values go as BYTES of rank 1.
_SENT = TensorSpec("", "BYTES", [1])
# What a node reading another node's output needs from it (by the reader's type).
_NEEDS = {"RETRIEVER": ("FP32", 2), "CACHE": ("FP32", 2)}


def _where(node: ModelNode) -> str:
    url, model = node.target
    return f"{model}@{url}"


def _check_node(graph: Graph, node: ModelNode, meta: ModelMetadata) -> list[str]:
    problems = []
    declared_in = {t.name: t for t in meta.inputs}
    for name, ref in node.inputs.items():
        refs = [ref] if isinstance(ref, str) else ref
        edge = f"edge {' | '.join(refs)} -> {node.name}.{name}"
        spec = declared_in.get(name)
        if spec is None:
            problems.append(f"{edge}: {_where(node)} has no input {name!r} (its inputs: {sorted(declared_in)})")
        elif spec.datatype != _SENT.datatype or len(spec.shape) != len(_SENT.shape):
            problems.append(
                f"{edge}: the graph sends {_SENT.datatype} rank {len(_SENT.shape)}, {_where(node)} declares "
                f"{name!r} as {spec.datatype} {spec.shape}"
            )
    declared_out = {t.name: t for t in meta.outputs}
    for reader in graph.nodes:
        for ref in reader.refs():
            head, _, out = ref.partition(".")
            if head != node.name or out == "parameters" or reader is node:
                continue
            edge = f"edge {node.name}.{out} -> {reader.name}"
            spec = declared_out.get(out)
            if spec is None:
                problems.append(f"{edge}: {_where(node)} has no output {out!r} (its outputs: {sorted(declared_out)})")
                continue
            need = _NEEDS.get(reader.type)
            if need and (spec.datatype != need[0] or len(spec.shape) != need[1]):
                problems.append(
                    f"{edge}: {reader.name} ({reader.type}) needs {need[0]} rank {need[1]}, {_where(node)} declares "
                    f"{out!r} as {spec.datatype} {spec.shape}"
                )
    return problems


# (url, model, the node's metadata as sorted pairs): what one check call addresses
Key = tuple[str, str, tuple[tuple[str, str], ...]]


async def _fetch(client: AsyncInferenceClient, key: Key, timeout: float) -> ModelMetadata | str:
    """The model's metadata, or why it cannot be had (asked with the node's own metadata, e.g. the
    ``seldon-model`` header a mesh routes by)."""
    _, model, pairs = key
    headers = dict(pairs)
    try:
        if not await client.model_ready(model, timeout=timeout, headers=headers):
            return "is not ready"
        return await client.metadata(model, timeout=timeout, headers=headers)
    except RagraphError as exc:
        return f"unreachable ({exc.code.name}: {exc.message})"


def _key(url: str, model: str, headers: Mapping[str, str]) -> Key:
    return (url, model, tuple(sorted(headers.items())))


async def check_nodes(
    graph: Graph, clients: Mapping[str, AsyncInferenceClient], timeout: float = 5.0
) -> tuple[list[str], list[str]]:
    """(problems, optional nodes down). A problem is one line naming the edge and both sides, or a
    required node that cannot be reached. A node whose ``on_error`` is ``skip`` or ``default`` is
    optional: requests go on without it, so its being unreachable or not ready is reported in the
    second list, not as a problem (an optional node that answers but does not fit the graph still
    is one). Each (server, model, metadata) is asked once, all concurrently, so one hung node
    costs one ``timeout``, not one per node."""
    nodes = graph.of(ModelNode)
    keys = {_key(*n.target, n.endpoint.headers) for n in nodes if n.endpoint}
    guards = [n for n in nodes if n.output_guard]
    keys |= {_key(g.output_guard.url, g.output_guard.model, g.output_guard.headers) for g in guards if g.output_guard}
    ordered = sorted(keys)
    answers = await asyncio.gather(*(_fetch(clients[key[0]], key, timeout) for key in ordered))
    found = dict(zip(ordered, answers, strict=True))
    problems: list[str] = []
    down: list[str] = []
    for node in nodes:
        assert node.endpoint
        meta = found[_key(*node.target, node.endpoint.headers)]
        if isinstance(meta, str):
            line = f"node {node.name}: {_where(node)} {meta}"
            if node.on_error == "fail":
                problems.append(line)
            else:
                down.append(f"{line} (optional, on_error: {node.on_error})")
        else:
            problems.extend(_check_node(graph, node, meta))
    for node in guards:
        assert node.output_guard
        guard = node.output_guard
        answer = found[_key(guard.url, guard.model, guard.headers)]
        if isinstance(answer, str):
            problems.append(f"node {node.name} output guard: {guard.model}@{guard.url} {answer}")
    return problems, down


async def check(graph: Graph, clients: Mapping[str, AsyncInferenceClient], timeout: float = 5.0) -> list[str]:
    """Every problem found, optional nodes that are down included; [] when the graph fits and every
    node answers (``ragraph graph check``)."""
    problems, down = await check_nodes(graph, clients, timeout)
    return problems + down
