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

Limits (docs/operations.md, "Input limits"), checked before any store sees the filter:
``$and``/``$or`` nested at most :data:`MAX_DEPTH` deep, at most :data:`MAX_CONDITIONS` field
conditions in all, at most :data:`MAX_LIST` values in one ``$in``/``$nin`` list and
:data:`MAX_VALUES` in all, field names up to :data:`MAX_FIELD_CHARS` characters, integers within
signed 64 bits and finite numbers (what SQLite and Pinecone store).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ragraph_client import jsontext
from ragraph_client.errors import InvalidArgument

Scalar = str | int | float | bool
_COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_FIELD_OPS = {"$eq", "$ne", "$in", "$nin", "$exists", *_COMPARE}
_LOGIC = {"$and", "$or"}


MAX_DEPTH = 8  # $and / $or inside one another
MAX_CONDITIONS = 128  # field conditions in the whole filter
MAX_LIST = 1024  # values in one $in / $nin list
MAX_VALUES = 4096  # values in the whole filter
MAX_FIELD_CHARS = 256
_INT64 = (-(2**63), 2**63 - 1)


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


class _Budget:
    """What one filter has used of the limits so far."""

    def __init__(self) -> None:
        self.conditions = 0
        self.values = 0

    def condition(self, where: str, values: int) -> None:
        self.conditions += 1
        self.values += values
        if self.conditions > MAX_CONDITIONS:
            raise FilterError(f"filter has more than {MAX_CONDITIONS} field conditions (at {where})")
        if self.values > MAX_VALUES:
            raise FilterError(f"filter holds more than {MAX_VALUES} values in all (at {where})")


def _check_number(where: str, op: str, value: object) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        raise FilterError(f"filter {where}: {op} integer {value} is outside signed 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"filter {where}: {op} wants a finite number, got {value}")


def _check_value(where: str, op: str, value: object) -> None:
    _check_number(where, op, value)
    if op in _COMPARE:
        if not _is_number(value):
            raise FilterError(f"filter {where}: {op} wants a number, got {_show(value)}")
    elif op in ("$eq", "$ne"):
        if not isinstance(value, str | int | float | bool):
            raise FilterError(f"filter {where}: {op} wants a string, number or boolean, got {_show(value)}")
    elif op in ("$in", "$nin"):
        if not isinstance(value, list) or not value:
            raise FilterError(f"filter {where}: {op} wants a non-empty list, got {_show(value)}")
        if len(value) > MAX_LIST:
            raise FilterError(f"filter {where}: {op} list holds {len(value)} values, more than {MAX_LIST}")
        for item in value:
            if not isinstance(item, str) and not _is_number(item):
                raise FilterError(f"filter {where}: {op} list items must be strings or numbers, got {_show(item)}")
            _check_number(where, op, item)
    elif op == "$exists" and not isinstance(value, bool):
        raise FilterError(f"filter {where}: $exists wants true or false, got {_show(value)}")


def _show(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_field(field: str, spec: object, budget: _Budget) -> Node:
    if len(field) > MAX_FIELD_CHARS:
        raise FilterError(f"filter field {field[:40]!r}...: longer than {MAX_FIELD_CHARS} characters")
    where = f"field {field!r}"
    if not isinstance(spec, dict):
        _check_value(where, "$eq", spec)
        budget.condition(where, 1)
        return Cond(field, "$eq", spec)
    if not spec:
        raise FilterError(f"filter field {field!r}: empty operator object")
    conds: list[Node] = []
    for op, value in spec.items():
        if op not in _FIELD_OPS:
            raise FilterError(f"filter field {field!r}: unknown operator {op!r}")
        _check_value(where, op, value)
        budget.condition(where, len(value) if isinstance(value, list) else 1)
        conds.append(Cond(field, op, value))
    return conds[0] if len(conds) == 1 else Logic("$and", tuple(conds))


def parse(spec: object, path: str = "filter") -> Node | None:
    """Validate a filter (a dict, or None / {} for no filter) into a tree; FilterError otherwise
    (also past a limit: see the module's docstring)."""
    return _parse(spec, path, 0, _Budget())


def _parse(spec: object, path: str, depth: int, budget: _Budget) -> Node | None:
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
            if depth >= MAX_DEPTH:
                raise FilterError(f"{path}: $and/$or nested deeper than {MAX_DEPTH} levels")
            subs = []
            for i, item in enumerate(value):
                if not isinstance(item, dict) or not item:
                    raise FilterError(f"{path}: {key}[{i}] must be a non-empty JSON object")
                sub = _parse(item, f"{path}.{key}[{i}]", depth + 1, budget)
                assert sub is not None
                subs.append(sub)
            parts.append(Logic(key, tuple(subs)))
        elif key.startswith("$"):
            raise FilterError(f"{path}: operator {key!r} must sit under a field name")
        else:
            parts.append(_parse_field(key, value, budget))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Logic("$and", tuple(parts))


def load(text: str | None) -> Node | None:
    """A filter given as JSON text (CLI flags, request parameters)."""
    if text is None or not text.strip():
        return None
    try:
        spec = jsontext.loads(text, "filter")
    except InvalidArgument as exc:
        raise FilterError(exc.message) from None
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


def _in_sql(values: list[Scalar], params: list[Any]) -> str:
    """Predicate on ``j`` true when it equals any of ``values`` (strings and numbers): one IN list
    per kind, so a long list costs no expression depth (SQLite caps that at 1000)."""
    texts = [v for v in values if isinstance(v, str)]
    numbers = [v for v in values if not isinstance(v, str)]
    parts = []
    if texts:
        marks = ", ".join("?" * len(texts))
        params.extend([*texts, *texts])
        parts.append(
            f"(j.type = 'text' AND j.value IN ({marks})) OR (j.type = 'array' AND EXISTS "
            f"(SELECT 1 FROM json_each(j.value) e WHERE e.type = 'text' AND e.value IN ({marks})))"
        )
    if numbers:
        params.extend(numbers)
        parts.append(f"({_NUM} AND j.value IN ({', '.join('?' * len(numbers))}))")
    return " OR ".join(parts)


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
    if cond.op in ("$in", "$nin"):
        predicate = _in_sql(cond.value, params)
    else:
        predicate = _eq_sql(cond.value, params)
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
