"""The graph's nodes: one model per ``type`` (MODEL, RETRIEVER, ROUTER, COMBINER, CACHE), each with
its own fields, and :data:`Node`, their union discriminated on ``type``. Documented in
``docs/graph.md`` ("Node types"). What spans nodes (references, the walk, the checks that need
the whole graph) is in :mod:`.graph`; the parts a node is made of in :mod:`.node_parts`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core.core_schema import ValidatorFunctionWrapHandler
from ragraph_client.errors import Unavailable

from .node_parts import CacheParameters, Condition, Endpoint, OutputGuard

NodeType = Literal["MODEL", "RETRIEVER", "ROUTER", "COMBINER", "CACHE"]


# Fields of one type that the graph's checks name when another type carries them ("forward is
# only for MODEL nodes"): set aside while the node is read, so the message stays that one. A
# value that would not do on its own type either is left in place: an unknown field there.
_NAMED_WHEN_MISPLACED: dict[str, TypeAdapter[Any]] = {
    "forward": TypeAdapter(dict[str, str] | list[str | dict[str, str]]),
    "stream": TypeAdapter(bool),
    "output_guard": TypeAdapter(OutputGuard | None),
    "on_hit": TypeAdapter(str | None),
}


def _read_aside(field: str, value: Any) -> tuple[bool, Any]:
    try:
        return True, _NAMED_WHEN_MISPLACED[field].validate_python(value)
    except ValidationError:
        return False, None


class NodeBase(BaseModel):
    """What every node has: a name, where the walk goes next, what it reads, and its policy."""

    model_config = ConfigDict(extra="forbid")
    remote: ClassVar[bool] = False  # calls a server or a store: timed, and may retry
    name: str
    children: list[str] = Field(default_factory=list)
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict, description="Sent with every call (MODEL).")
    timeout_ms: int | None = Field(None, gt=0, description="Cap on this node's share of the request deadline.")
    retries: int = Field(0, ge=0, le=5, description="Extra attempts; only idempotent (non-streaming) nodes.")
    on_error: Literal["fail", "skip", "default"] = "fail"
    default: dict[str, Any] = Field(default_factory=dict, description="Outputs used when on_error=default.")
    _misplaced: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _set_aside(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Another type's field that the checks name (see _NAMED_WHEN_MISPLACED) is kept aside."""
        aside: dict[str, Any] = {}
        if isinstance(data, dict):
            for field in _NAMED_WHEN_MISPLACED:
                if field in data and field not in cls.model_fields:
                    ok, value = _read_aside(field, data[field])
                    if ok:
                        aside[field] = value
            data = {k: v for k, v in data.items() if k not in aside}
        node = handler(data)
        node._misplaced = aside
        return node

    def given(self, field: str) -> Any:
        """The field's value, on this type or set aside as another type's (for the graph's checks)."""
        return getattr(self, field) if field in type(self).model_fields else self._misplaced.get(field)

    def refs(self) -> list[str]:
        """Every reference the node reads."""
        out: list[str] = []
        for value in self.inputs.values():
            out.extend([value] if isinstance(value, str) else value)
        return out

    def address(self) -> str | None:
        """The far end errors name (``model@url`` or a store URI); None for nodes inside the router."""
        return None


class ModelNode(NodeBase):
    """Calls a V2 model: ModelInfer, or ModelStreamInfer with ``stream: true``."""

    remote: ClassVar[bool] = True
    type: Literal["MODEL"]
    endpoint: Endpoint | None = None
    forward: dict[str, str] = Field(
        default_factory=dict,
        description="Request parameters passed on to this node: {request name: the node's name}; a list of "
        "names (or of one-entry mappings) passes names unchanged.",
    )
    stream: bool = Field(False, description="MODEL: call ModelStreamInfer and pass text deltas to the caller.")
    stream_style: Literal["triton", "mlserver"] = "mlserver"
    output_guard: OutputGuard | None = Field(None, description="Streaming MODEL nodes: stop a blocked answer.")

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

    @property
    def target(self) -> tuple[str, str]:
        """(url, model): checked present when the graph is loaded."""
        assert self.endpoint and self.endpoint.url and self.endpoint.model
        return self.endpoint.url, self.endpoint.model

    def address(self) -> str | None:
        return self.endpoint.label() if self.endpoint else None


class RetrieverNode(NodeBase):
    """The nearest chunks from a store, for the ``vector`` input."""

    stream: ClassVar[bool] = False  # only MODEL nodes stream
    remote: ClassVar[bool] = True
    type: Literal["RETRIEVER"]
    endpoint: Endpoint | None = None

    @property
    def store(self) -> str:
        assert self.endpoint and self.endpoint.store
        return self.endpoint.store

    def address(self) -> str | None:
        return self.endpoint.label() if self.endpoint else None


class RouterNode(NodeBase):
    """Picks one successor: the first condition that holds, else the default route."""

    stream: ClassVar[bool] = False  # only MODEL nodes stream
    endpoint: ClassVar[None] = None  # calls nothing outside the router
    type: Literal["ROUTER"]
    conditions: list[Condition] = Field(default_factory=list, description="ROUTER: first match wins.")
    default_child: str | None = Field(None, alias="default_route")

    @model_validator(mode="before")
    @classmethod
    def _router_default(cls, data: Any) -> Any:
        # ROUTER nodes spell their fallback ``default: child``; other nodes use ``default`` for outputs.
        if isinstance(data, dict) and isinstance(data.get("default"), str):
            data = {**data, "default_route": data["default"]}
            data.pop("default")
        return data

    def refs(self) -> list[str]:
        return [*super().refs(), *(ref for c in self.conditions for ref in c.when)]

    def routes(self) -> list[str]:
        targets = [c.goto for c in self.conditions]
        if self.default_child:
            targets.append(self.default_child)
        return targets

    def choose(self, value_of: Callable[[str], Any]) -> str:
        """The route this run takes."""
        for condition in self.conditions:
            if condition.met(value_of):
                return condition.goto
        if self.default_child is None:
            raise Unavailable(f"node {self.name}: no condition matched and no default route")
        return self.default_child


class CombinerNode(NodeBase):
    """Builds the prompt, a fixed refusal, or the final answer from references."""

    stream: ClassVar[bool] = False  # only MODEL nodes stream
    endpoint: ClassVar[None] = None  # calls nothing outside the router
    type: Literal["COMBINER"]
    combine: Literal["prompt", "answer", "refusal"] | None = None


class CacheNode(NodeBase):
    """The semantic cache: a hit serves a stored answer and the walk jumps to ``on_hit``."""

    stream: ClassVar[bool] = False  # only MODEL nodes stream
    remote: ClassVar[bool] = True
    type: Literal["CACHE"]
    endpoint: Endpoint | None = None
    on_hit: str | None = Field(None, description="CACHE: where a hit goes; the nodes in between are skipped.")

    @property
    def store(self) -> str:
        assert self.endpoint and self.endpoint.store
        return self.endpoint.store

    @property
    def settings(self) -> CacheParameters:
        """The node's ``parameters``, typed (checked when the graph is loaded)."""
        return CacheParameters.model_validate(self.parameters)

    def address(self) -> str | None:
        return self.endpoint.label() if self.endpoint else None


Node = Annotated[ModelNode | RetrieverNode | RouterNode | CombinerNode | CacheNode, Field(discriminator="type")]
NODE_CLASSES: tuple[type[NodeBase], ...] = (ModelNode, RetrieverNode, RouterNode, CombinerNode, CacheNode)
