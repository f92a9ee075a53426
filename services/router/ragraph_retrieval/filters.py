"""Pinecone's metadata filter language: parsed and validated once into a small tree, then run by
the embedded store as SQL over its JSON metadata.

Semantics (the same table of queries runs against both backends in the tests):

* ``{"f": v}`` means ``{"f": {"$eq": v}}``; several keys or operators at one level are ANDed;
  ``$and`` / ``$or`` take a non-empty list of filters.
* Values are strings, numbers (int and float compare numerically), booleans (never equal to a
  number) or lists of strings. On a list field ``$eq`` / ``$in`` match when any element does and
  ``$ne`` / ``$nin`` when none does.
* A missing field matches ``$ne``, ``$nin`` and ``$exists: false`` (MongoDB's reading) and
  nothing else. ``$gt`` ``$gte`` ``$lt`` ``$lte`` only ever match numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ragraph_client.errors import InvalidArgument

Scalar = str | int | float | bool
_COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_FIELD_OPS = {"$eq", "$ne", "$in", "$nin", "$exists", *_COMPARE}
_LOGIC = {"$and", "$or"}


class FilterError(InvalidArgument):
    """A malformed filter; the message names the offending field or operator."""


@dataclass(frozen=True)
class Cond:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Logic:
    op: str  # "$and" | "$or"
    parts: tuple[Node, ...]


Node = Cond | Logic


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(where: str, op: str, value: object) -> None:
    if op in _COMPARE:
        if not _is_number(value):
            raise FilterError(f"filter {where}: {op} wants a number, got {json.dumps(value)}")
    elif op in ("$eq", "$ne"):
        if not isinstance(value, str | int | float | bool):
            raise FilterError(f"filter {where}: {op} wants a string, number or boolean, got {json.dumps(value)}")
    elif op in ("$in", "$nin"):
        if not isinstance(value, list) or not value:
            raise FilterError(f"filter {where}: {op} wants a non-empty list, got {json.dumps(value)}")
        for item in value:
            if not isinstance(item, str) and not _is_number(item):
                raise FilterError(f"filter {where}: {op} list items must be strings or numbers, got {json.dumps(item)}")
    elif op == "$exists" and not isinstance(value, bool):
        raise FilterError(f"filter {where}: $exists wants true or false, got {json.dumps(value)}")


def _parse_field(field: str, spec: object) -> Node:
    if not isinstance(spec, dict):
        _check_value(f"field {field!r}", "$eq", spec)
        return Cond(field, "$eq", spec)
    if not spec:
        raise FilterError(f"filter field {field!r}: empty operator object")
    conds: list[Node] = []
    for op, value in spec.items():
        if op not in _FIELD_OPS:
            raise FilterError(f"filter field {field!r}: unknown operator {op!r}")
        _check_value(f"field {field!r}", op, value)
        conds.append(Cond(field, op, value))
    return conds[0] if len(conds) == 1 else Logic("$and", tuple(conds))


def parse(spec: object, path: str = "filter") -> Node | None:
    """Validate a filter (a dict, or None / {} for no filter) into a tree; FilterError otherwise."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise FilterError(f"{path} must be a JSON object, got {type(spec).__name__}")
    parts: list[Node] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise FilterError(f"{path}: keys must be strings")
        if key in _LOGIC:
            if not isinstance(value, list) or not value:
                raise FilterError(f"{path}: {key} wants a non-empty list of filters")
            subs = []
            for i, item in enumerate(value):
                if not isinstance(item, dict) or not item:
                    raise FilterError(f"{path}: {key}[{i}] must be a non-empty JSON object")
                sub = parse(item, f"{path}.{key}[{i}]")
                assert sub is not None
                subs.append(sub)
            parts.append(Logic(key, tuple(subs)))
        elif key.startswith("$"):
            raise FilterError(f"{path}: operator {key!r} must sit under a field name")
        else:
            parts.append(_parse_field(key, value))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Logic("$and", tuple(parts))


def load(text: str | None) -> Node | None:
    """A filter given as JSON text (CLI flags, request parameters)."""
    if text is None or not text.strip():
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FilterError(f"filter is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    return parse(spec)


# --- SQL for the embedded store ------------------------------------------------------------------
# ``json_each(metadata)`` walks the record's top-level keys; the key is a bound parameter, so any
# key (dots, quotes, spaces) works without JSON-path escaping.

_NUM = "j.type IN ('integer', 'real')"


def _eq_sql(value: Scalar, params: list[Any]) -> str:
    """Predicate on ``j`` (one metadata entry) true when it equals ``value``."""
    if isinstance(value, bool):
        return "j.type = 'true'" if value else "j.type = 'false'"
    if isinstance(value, str):
        params.extend([value, value])
        return (
            "((j.type = 'text' AND j.value = ?) OR (j.type = 'array' AND EXISTS "
            "(SELECT 1 FROM json_each(j.value) e WHERE e.type = 'text' AND e.value = ?)))"
        )
    params.append(value)
    return f"({_NUM} AND j.value = ?)"


def _entry(field: str, predicate: str, params: list[Any], field_param_at: int) -> str:
    params.insert(field_param_at, field)
    return f"EXISTS (SELECT 1 FROM json_each(r.metadata) j WHERE j.key = ? AND {predicate})"


def _cond_sql(cond: Cond, params: list[Any]) -> str:
    at = len(params)
    if cond.op == "$exists":
        params.append(cond.field)
        clause = "EXISTS (SELECT 1 FROM json_each(r.metadata) j WHERE j.key = ?)"
        return clause if cond.value else f"NOT {clause}"
    if cond.op in _COMPARE:
        params.append(cond.value)
        return _entry(cond.field, f"{_NUM} AND j.value {_COMPARE[cond.op]} ?", params, at)
    values = cond.value if cond.op in ("$in", "$nin") else [cond.value]
    predicate = " OR ".join(_eq_sql(v, params) for v in values)
    clause = _entry(cond.field, f"({predicate})", params, at)
    return f"NOT {clause}" if cond.op in ("$ne", "$nin") else clause


def to_sql(node: Node, params: list[Any]) -> str:
    """A WHERE fragment over table alias ``r`` (column ``metadata`` holds JSON); appends its
    bound parameters to ``params`` in order."""
    if isinstance(node, Cond):
        return _cond_sql(node, params)
    joiner = " AND " if node.op == "$and" else " OR "
    return "(" + joiner.join(to_sql(part, params) for part in node.parts) + ")"


def to_dict(node: Node) -> dict[str, Any]:
    """The filter in Pinecone's canonical JSON form (every condition as ``{field: {op: value}}``),
    as sent to Pinecone."""
    if isinstance(node, Cond):
        return {node.field: {node.op: node.value}}
    return {node.op: [to_dict(part) for part in node.parts]}
