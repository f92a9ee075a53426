"""What flows between nodes: every value the graph produced so far, named ``<node>.<output>`` or
``request.<name>``, plus the per-node status block.

References (what a graph file writes in ``inputs`` and conditions) are read with :meth:`Values.get`.
The router's own code reads and writes a node's outputs through the typed accessors below: this
module is the one place that spells a value's name."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from ragraph_client.tensors import InferResponse, Tensor
from ragraph_retrieval.store import Match

from .prompt import Prompt

if TYPE_CHECKING:
    from .cache import Entry, Slot

REQUEST = "request"  # the request's question and parameters are request.<name>


def output_ref(node: str, output: str) -> str:
    """The reference to a node's output (or to the request's ``question`` and parameters)."""
    return f"{node}.{output}"


@dataclass
class NodeStatus:
    status: str = "pending"  # ok | failed | skipped | default | pending
    ms: float = 0.0
    attempts: int = 0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "ms": round(self.ms, 2)}
        if self.attempts > 1:
            out["attempts"] = self.attempts
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class Values:
    """Every value the graph produced so far, by ``<node>.<name>`` / ``request.<name>``."""

    _data: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, NodeStatus] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    answer: dict[str, Any] = field(default_factory=dict)  # the final outputs a ``combine: answer`` node mapped

    @classmethod
    def for_request(cls, question: str, params: dict[str, Any]) -> Values:
        values = cls()
        values._put(REQUEST, "question", question)
        for key, value in params.items():
            values._put(REQUEST, key, value)
        return values

    # --- references ----------------------------------------------------------------------

    def get(self, ref: str | list[str]) -> Any:
        """A reference's value: the first of a list that has one; None when none has."""
        for one in [ref] if isinstance(ref, str) else ref:
            if self._data.get(one) is not None:
                return self._data[one]
        return None

    def _put(self, node: str, output: str, value: Any) -> None:
        self._data[output_ref(node, output)] = value

    def _out(self, node: str, output: str) -> Any:
        return self._data.get(output_ref(node, output))

    def put_outputs(self, node: str, outputs: dict[str, Any]) -> None:
        """Outputs by name (a node's ``default:`` block, on_error: default)."""
        for name, value in outputs.items():
            self._put(node, name, value)

    # --- MODEL nodes -----------------------------------------------------------------------

    def put_response(self, node: str, response: InferResponse) -> None:
        for tensor in response.outputs:
            self._put(node, tensor.name, tensor_value(tensor))
        self._put(node, "parameters", dict(response.parameters))

    def parameters(self, node: str) -> dict[str, Any]:
        """The node's response parameters (tokens, ttft_ms, finish_reason...); {} when none came."""
        params = self._out(node, "parameters")
        return params if isinstance(params, dict) else {}

    def add_parameters(self, node: str, params: dict[str, Any]) -> None:
        """A streaming node's parameters as they arrive, later ones over earlier ones."""
        self._put(node, "parameters", {**(self._out(node, "parameters") or {}), **params})

    def text(self, node: str) -> str | None:
        return self._out(node, "text")

    def put_text(self, node: str, text: str) -> None:
        self._put(node, "text", text)

    def guarded(self, node: str) -> str | None:
        """The label the output guard stopped the node's answer for, when it did."""
        return self._out(node, "guarded")

    def put_guarded(self, node: str, label: str) -> None:
        self._put(node, "guarded", label)
        self.add_parameters(node, {"finish_reason": "guarded"})

    # --- RETRIEVER nodes -------------------------------------------------------------------

    def matches(self, node: str) -> list[Match] | None:
        return self._out(node, "matches")

    def put_matches(self, node: str, matches: list[Match]) -> None:
        self._put(node, "matches", matches)

    # --- COMBINER nodes --------------------------------------------------------------------

    def put_prompt(self, node: str, prompt: Prompt) -> None:
        self._put(node, "messages", json.dumps(prompt.messages))
        self._put(node, "sources", prompt.sources)
        self._put(node, "tokens", prompt.tokens)

    def put_refusal(self, node: str, text: str) -> None:
        self._put(node, "text", text)
        self._put(node, "sources", [])

    # --- CACHE nodes -----------------------------------------------------------------------

    def put_lookup(self, node: str, hit: bool, score: float | None) -> None:
        self._put(node, "hit", hit)
        self._put(node, "score", score)

    def hit(self, node: str) -> bool:
        return bool(self._out(node, "hit"))

    def score(self, node: str) -> float | None:
        """The cache's similarity: the hit's, or on a miss the best under the same key, if any."""
        return self._out(node, "score")

    def put_slot(self, node: str, slot: Slot) -> None:
        self._put(node, "slot", slot)

    def slot(self, node: str) -> Slot | None:
        """Where a missed answer is stored once made (set on a miss)."""
        return self._out(node, "slot")

    def put_entry(self, node: str, entry: Entry) -> None:
        """A hit's stored answer, as the node's outputs."""
        self._put(node, "answer", entry.answer)
        self._put(node, "sources", entry.sources)
        self._put(node, "label", entry.label)
        self._put(node, "finish_reason", entry.finish_reason)

    def stored_finish_reason(self, node: str) -> str | None:
        """The finish_reason a cache hit's answer was stored with."""
        return self._out(node, "finish_reason")

    # --- the run ---------------------------------------------------------------------------

    @property
    def flagged(self) -> bool:
        return any(s.status in ("failed", "skipped", "default") for s in self.nodes.values())


def tensor_value(tensor: Tensor) -> Any:
    """BYTES -> str (one element) or list[str]; one number -> a Python number; else numpy."""
    if tensor.datatype == "BYTES":
        texts = tensor.as_strings()
        return texts[0] if len(texts) == 1 else texts
    array = tensor.as_numpy()
    return array.reshape(-1)[0].item() if array.size == 1 else array


def as_input(name: str, value: Any) -> Any:
    """A graph value in the form the client's ``infer`` takes for input ``name``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, np.ndarray | list):
        return value
    raise TypeError(f"input {name!r}: cannot send a {type(value).__name__}")
