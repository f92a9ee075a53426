"""The ``rag`` model's request parameters: which ones it takes, what each must hold, and which
go on to the graph's nodes. Read once per request, before any node is called.

- The router's own: ``top_k``, ``filter``, ``namespace``, ``debug`` (:class:`Parameters`).
- Those the graph forwards to its nodes (a node's ``forward:``). The shipped graphs forward
  the LLM's generation parameters; each one known here (:data:`CHECKS`) is checked for type
  and range up front, so a bad value never costs an encoder call and over SSE is a plain 400.
  The LLM checks them again, and applies limits of its own (its ``max_tokens`` ceiling).
- Protocol flags that V2 peers send on their own (:data:`PROTOCOL`), accepted with the
  meaning given there.

Anything else is INVALID_ARGUMENT listing what the model takes: a parameter is never dropped
without a word. Values go on normalised (an integer sent as ``uint64_param`` or as a string is
an int, a float is a float, ``stop`` is a JSON list)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ragraph_client.errors import InvalidArgument
from ragraph_client.params import PROTOCOL, get_bool, get_float, get_int, get_json, get_str
from ragraph_client.tensors import Param
from ragraph_retrieval import filters

Check = Callable[[Mapping[str, Any], str], Param]
INT64_MAX = 2**63 - 1
MAX_STOPS = 16
MAX_NAMESPACE_CHARS = 512

ROUTER = ("top_k", "filter", "namespace", "debug")
# ragraph_client.params.PROTOCOL, as the router reads them: tritonclient.grpc's
# enable_empty_final_response (the router's last stream message always carries
# triton_final_response: true), tritonclient.http's binary_data_output (the REST gateway answers
# JSON, which tritonclient.http reads too), and MLServer codecs' content_type (the question is
# text: only "str" is taken).


def _int(low: int, high: int = INT64_MAX) -> Check:
    def check(params: Mapping[str, Any], name: str) -> Param:
        value = get_int(params, name, None)
        assert value is not None
        if not low <= value <= high:
            top = "2**63-1" if high == INT64_MAX else str(high)
            raise InvalidArgument(f"parameter '{name}' must be an integer from {low} to {top}, got {value}")
        return value

    return check


def _float(low: float, high: float = math.inf, low_open: bool = False) -> Check:
    def check(params: Mapping[str, Any], name: str) -> Param:
        value = get_float(params, name, None)
        assert value is not None
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and value <= high):
            span = f"{'(' if low_open else '['}{low:g}, {high:g}]" if math.isfinite(high) else None
            bound = f"in {span}" if span else f"{'>' if low_open else '>='} {low:g}"
            raise InvalidArgument(f"parameter '{name}' must be a finite number {bound}, got {params[name]!r}")
        return value

    return check


def _stop(params: Mapping[str, Any], name: str) -> Param:
    stop = get_json(params, name, None)
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidArgument(f"parameter '{name}' must be JSON: a string or a list of strings")
    if any(not s for s in stops):
        raise InvalidArgument(f"parameter '{name}' holds an empty string")
    if len(stops) > MAX_STOPS:
        raise InvalidArgument(f"parameter '{name}' holds {len(stops)} strings, more than the limit of {MAX_STOPS}")
    return json.dumps(stops, ensure_ascii=False)


# The LLM's generation parameters, by the request's name for them (docs/graph.md, "The rag model").
CHECKS: dict[str, Check] = {
    "max_tokens": _int(1),
    "temperature": _float(0.0),
    "top_p": _float(0.0, 1.0, low_open=True),
    "top_k_tokens": _int(0),
    "seed": _int(0),
    "stop": _stop,
    "repetition_penalty": _float(0.0, 10.0, low_open=True),  # 1 = off
    "no_repeat_ngram_size": _int(0, 64),  # 0 = off
}


@dataclass
class Parameters:
    """One request's parameters, read."""

    top_k: int | None = None
    filter: filters.Node | None = None
    namespace: str | None = None
    debug: bool = False
    forwarded: dict[str, Param] = field(default_factory=dict)  # by the request's name, for ``forward:``


def known(forwarded: Iterable[str]) -> list[str]:
    """The names a request may use, given the names the graph forwards."""
    return sorted({*ROUTER, *forwarded})


def read(params: Mapping[str, Any], forwarded: Iterable[str], max_top_k: int) -> Parameters:
    """Check every parameter of a request; ``forwarded`` are the names some node of the graph
    forwards. InvalidArgument naming the first bad one."""
    takes = known(forwarded)
    for name in params:
        if name not in takes and name not in PROTOCOL:
            raise InvalidArgument(f"unknown parameter '{name}': the rag model takes {', '.join(takes)}")
    out = Parameters(
        top_k=get_int(params, "top_k", None),
        namespace=get_str(params, "namespace", None),
        debug=get_bool(params, "debug", False),
    )
    if out.top_k is not None and not 1 <= out.top_k <= max_top_k:
        raise InvalidArgument(f"parameter 'top_k' must be between 1 and {max_top_k}, got {out.top_k}")
    if out.namespace is not None and len(out.namespace) > MAX_NAMESPACE_CHARS:
        raise InvalidArgument(f"parameter 'namespace' is longer than {MAX_NAMESPACE_CHARS} characters")
    raw_filter = params.get("filter")
    if raw_filter is not None and not isinstance(raw_filter, str):
        raise InvalidArgument("parameter 'filter' must be a JSON string")
    out.filter = filters.load(raw_filter)
    _protocol(params)
    for name in forwarded:
        if params.get(name) is not None:
            check = CHECKS.get(name)
            out.forwarded[name] = check(params, name) if check else params[name]
    return out


def _protocol(params: Mapping[str, Any]) -> None:
    for name in ("triton_enable_empty_final_response", "binary_data_output"):
        get_bool(params, name, False)
    content_type = get_str(params, "content_type", None)
    if content_type not in (None, "str"):
        raise InvalidArgument(f"parameter 'content_type': the rag model's input is text ('str'), got {content_type!r}")
