"""What flows between nodes: a flat dict of named values plus the per-node status block."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ragraph_client.tensors import InferResponse, Tensor


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

    data: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, NodeStatus] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def get(self, ref: str | list[str]) -> Any:
        for one in [ref] if isinstance(ref, str) else ref:
            if self.data.get(one) is not None:
                return self.data[one]
        return None

    def put_response(self, node: str, response: InferResponse) -> None:
        for tensor in response.outputs:
            self.data[f"{node}.{tensor.name}"] = tensor_value(tensor)
        self.data[f"{node}.parameters"] = dict(response.parameters)

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
