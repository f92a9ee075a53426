"""The semantic cache's keys (docs/graph.md, "Keying"): an answer is stored and served under a
hash of everything besides the question that changes it. Numbers count as numbers however a
caller spelled them; the graph counts as every node but the cache, in one shape."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from .graph import Graph
from .nodes import NODE_CLASSES, CacheNode, NodeBase

# Request parameters whose value is a number however the caller spelled it (V2 parameters may
# carry 0.7 as a double or as the string "0.7"; MLServer sends floats as strings).
_NUMERIC = {"max_tokens", "temperature", "top_p", "top_k_tokens", "seed"}


def canon(name: str, value: Any) -> Any:
    """A parameter value in one spelling: numbers (or numeric strings, for numeric parameters)
    as floats, lists item by item, anything else as a string or bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [canon(name, v) for v in value]
    if isinstance(value, str) and name in _NUMERIC:
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return str(value)


def digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Every field of every node type, at its default: a node is hashed in this one shape (its own
# fields over these), so a key does not depend on which fields its type happens to have.
_SHAPE = {
    name: spec.get_default(call_default_factory=True)
    for cls in NODE_CLASSES
    for name, spec in cls.model_fields.items()
    if not spec.is_required()
}


def _shaped(node: NodeBase) -> dict[str, Any]:
    return {**_SHAPE, **node.model_dump(mode="json")}


def graph_identity(graph: Graph, node: CacheNode) -> str:
    """A hash of everything in the graph that shapes an answer: every node but the CACHE node
    (its threshold and TTL decide what is served, not what is stored), plus its ``version``."""
    nodes = [_shaped(n) for n in graph.nodes if not isinstance(n, CacheNode)]
    return digest({"graph": graph.name, "nodes": nodes, "version": node.settings.version})
