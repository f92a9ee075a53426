"""The SQL of the ``postgres://`` store: its schema and Pinecone-syntax filters as WHERE fragments
over the JSONB ``metadata`` column.

Filters arrive parsed and checked (:func:`ragraph_retrieval.filters.parse` holds the language and
its limits). Every value travels as a bound parameter; the only text composed here is fixed SQL
and table/index names, which :func:`check_table` restricts and :mod:`psycopg.sql` quotes.

Semantics (those of :mod:`.filters`, run against the same table of cases as the other stores):

* ``$eq`` is JSONB containment: ``metadata @> {"f": v}`` matches a string, a number (``3``
  equals ``3.0``: JSONB compares numbers by value) or a boolean (never a number); a string also
  matches inside a list of strings (``metadata @> {"f": [v]}``). A GIN index serves both.
* ``$in`` is the same containment, ORed over its values (each a bound parameter; GIN bitmap
  scans OR together, where ``@> ANY(array)`` could not use the index).
* ``$ne`` / ``$nin`` are exactly ``NOT $eq`` / ``NOT $in`` (a missing field matches them).
* ``$gt`` ``$gte`` ``$lt`` ``$lte`` compare as ``numeric`` and match numbers only.
* ``$exists`` is the ``?`` key operator.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb
from ragraph_client.errors import InvalidArgument

from . import filters

DEFAULT_TABLE = "ragraph_vectors"
# HNSW indexes in pgvector take vectors of at most 2000 dimensions
MAX_HNSW_DIMENSION = 2000
_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,47}")  # room for the index names' suffixes within 63 bytes
_COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def check_table(name: str) -> str:
    if not _TABLE.fullmatch(name):
        raise InvalidArgument(
            f"store URI: table={name!r} must be 1-48 characters of lower-case letters, digits and _, "
            "not starting with a digit"
        )
    return name


def schema(table: str, dimension: int, m: int, ef_construction: int) -> list[sql.Composed]:
    """The statements that create the store's table and indexes (each ``IF NOT EXISTS``)."""
    t = sql.Identifier(table)
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} ("
            " namespace text NOT NULL,"
            " id text NOT NULL,"
            " doc_id text,"
            " embedding vector({dim}) NOT NULL,"
            " metadata jsonb NOT NULL,"
            " hash bytea NOT NULL,"
            " PRIMARY KEY (namespace, id))"
        ).format(t=t, dim=sql.Literal(dimension)),
        sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (namespace, doc_id)").format(
            i=sql.Identifier(f"{table}_doc"), t=t
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (metadata jsonb_path_ops)").format(
            i=sql.Identifier(f"{table}_meta"), t=t
        ),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)"
            " WITH (m = {m}, ef_construction = {ef})"
        ).format(i=sql.Identifier(f"{table}_hnsw"), t=t, m=sql.Literal(m), ef=sql.Literal(ef_construction)),
    ]


def hnsw_index(table: str) -> str:
    return f"{table}_hnsw"


def _contains(field: str, value: filters.Scalar) -> list[Jsonb]:
    """The JSONB objects ``metadata`` contains when ``field`` equals ``value``."""
    if isinstance(value, str):
        return [Jsonb({field: value}), Jsonb({field: [value]})]
    return [Jsonb({field: value})]


def _cond(cond: filters.Cond, params: list[Any]) -> str:
    if cond.op == "$exists":
        params.append(cond.field)
        return "(metadata ? %s::text)" if cond.value else "NOT (metadata ? %s::text)"
    if cond.op in _COMPARE:
        params.extend([cond.field, cond.field, Decimal(repr(cond.value))])
        return (
            "(CASE WHEN jsonb_typeof(metadata -> %s::text) = 'number'"
            f" THEN (metadata ->> %s::text)::numeric {_COMPARE[cond.op]} %s::numeric ELSE false END)"
        )
    values = cond.value if cond.op in ("$in", "$nin") else [cond.value]
    candidates = [j for v in values for j in _contains(cond.field, v)]
    params.extend(candidates)
    clause = "(" + " OR ".join(["metadata @> %s"] * len(candidates)) + ")"
    return f"NOT {clause}" if cond.op in ("$ne", "$nin") else clause


def where(node: filters.Node, params: list[Any]) -> str:
    """A WHERE fragment over the ``metadata`` column; appends its bound parameters to ``params``
    in order."""
    if isinstance(node, filters.Cond):
        return _cond(node, params)
    joiner = " AND " if node.op == "$and" else " OR "
    return "(" + joiner.join(where(part, params) for part in node.parts) + ")"
