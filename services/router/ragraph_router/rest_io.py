"""V2 REST JSON and Triton's generate-extension JSON <-> :class:`InferRequest` /
:class:`InferResponse` (the REST gateway's one converter; ``rest.py`` does no JSON shaping).

Client mistakes raise :class:`InvalidArgument` with a message naming the field
(``inputs[0].shape``, ``parameters.top_k``, ...)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from ragraph_client import jsontext
from ragraph_client.errors import InvalidArgument
from ragraph_client.tensors import DATATYPES, InferRequest, InferResponse, ModelMetadata, Param, Tensor, to_array

# generate / generate_stream: the flat body's key for the question (``text_input`` is Triton's
# name, accepted as an alias so generic generate clients work unchanged)
QUESTION = "question"
QUESTION_ALIASES = (QUESTION, "text_input")
_GENERATE_KEYS = {"id", "parameters", *QUESTION_ALIASES}
_INT_KINDS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_FLOAT_KINDS = ("FP16", "FP32", "FP64")


# --- bodies ------------------------------------------------------------------------------------------


def load_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, read under :mod:`ragraph_client.jsontext`'s limits
    (no NaN/Infinity, nesting, lone surrogates)."""
    if not body.strip():
        raise InvalidArgument("request body is empty: expected a JSON object")
    data = jsontext.loads(body, "request body")
    if not isinstance(data, dict):
        raise InvalidArgument(f"request body must be a JSON object, got {_kind(data)}")
    return data


def dumps(data: Any) -> bytes:
    # backslashreplace: a lone surrogate that reached a message still makes valid JSON, not a 500
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=_default)
    return text.encode("utf-8", "backslashreplace")


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --- request pieces ----------------------------------------------------------------------------------


def _id(data: dict[str, Any]) -> str:
    value = data.get("id", "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"id must be a string, got {_kind(value)}")
    return value


def read_parameters(value: Any, where: str = "parameters") -> dict[str, Param]:
    """A JSON parameters object. Scalars pass as they are; an object or array value (a
    ``filter``, a ``stop`` list) is passed on as its JSON text; null means absent."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be a JSON object, got {_kind(value)}")
    out: dict[str, Param] = {}
    for name, item in value.items():
        if item is None:
            continue
        if isinstance(item, (bool, int, float, str)):
            out[name] = item
        elif isinstance(item, (dict, list)):
            out[name] = json.dumps(item, ensure_ascii=False)
        else:  # pragma: no cover - json.loads yields nothing else
            raise InvalidArgument(f"{where}.{name} has an unsupported value")
    return out


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise InvalidArgument(f"{where}.shape must be an array of integers")
    if any(d < 0 for d in value):
        raise InvalidArgument(f"{where}.shape {value} has a negative dimension")
    return list(value)


def _flatten(value: Any) -> list[Any]:
    """V2 REST data: a flat array, a nested (row-major) array, or a lone scalar."""
    if not isinstance(value, list):
        return [value]
    out: list[Any] = []
    stack = [iter(value)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _data(datatype: str, items: list[Any], where: str) -> np.ndarray:
    def bad(i: int, wanted: str) -> InvalidArgument:
        return InvalidArgument(f"{where}.data[{i}] must be {wanted} for {datatype}, got {_kind(items[i])}")

    if datatype == "BYTES":
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise bad(i, "a string")
        out = np.empty(len(items), dtype=object)
        out[:] = [s.encode("utf-8") for s in items]
        return out
    if datatype == "BOOL":
        for i, item in enumerate(items):
            if not isinstance(item, bool):
                raise bad(i, "a boolean")
    elif datatype in _INT_KINDS:
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, int):
                raise bad(i, "an integer")
    elif datatype in _FLOAT_KINDS:
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise bad(i, "a number")
    return to_array(datatype, items, f"{where}.data")


def read_tensor(value: Any, where: str) -> Tensor:
    """One V2 REST input: ``{"name", "shape", "datatype", "parameters"?, "data"}``."""
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be a JSON object, got {_kind(value)}")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{where}.name must be a non-empty string")
    where = f"{where} ('{name}')"
    for key in ("shape", "datatype", "data"):
        if key not in value:
            raise InvalidArgument(f"{where}: missing field '{key}'")
    datatype = value["datatype"]
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidArgument(
            f"{where}.datatype: unknown datatype {json.dumps(datatype)} (expected one of {', '.join(DATATYPES)})"
        )
    shape = _shape(value["shape"], where)
    items = _flatten(value["data"])
    count = math.prod(shape)
    if len(items) != count:
        raise InvalidArgument(f"{where}: shape {shape} holds {count} elements but data holds {len(items)}")
    data = _data(datatype, items, where).reshape(shape)
    return Tensor(name, datatype, shape, data, read_parameters(value.get("parameters"), f"{where}.parameters"))


def read_infer(data: dict[str, Any], model: str, outputs: Sequence[str]) -> InferRequest:
    """A V2 REST infer body; ``outputs`` are the model's output names (a requested output
    must be one of them)."""
    inputs = data.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("inputs must be a non-empty array of tensors")
    tensors = [read_tensor(item, f"inputs[{i}]") for i, item in enumerate(inputs)]
    names = [t.name for t in tensors]
    for name in names:
        if names.count(name) > 1:
            raise InvalidArgument(f"input '{name}' is given more than once")
    wanted: list[str] = []
    requested = data.get("outputs")
    if requested is not None:
        if not isinstance(requested, list):
            raise InvalidArgument(f"outputs must be an array, got {_kind(requested)}")
        for i, item in enumerate(requested):
            out_name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(out_name, str):
                raise InvalidArgument(f"outputs[{i}].name must be a string")
            if out_name not in outputs:
                raise InvalidArgument(
                    f"outputs[{i}].name: model '{model}' has no output '{out_name}' (it has {', '.join(outputs)})"
                )
            wanted.append(out_name)
    return InferRequest(model, tensors, read_parameters(data.get("parameters")), _id(data), outputs=wanted)


def read_generate(data: dict[str, Any], model: str) -> InferRequest:
    """A generate-extension body: ``{"question" | "text_input": "...", "id"?, "parameters"?}``."""
    unknown = sorted(set(data) - _GENERATE_KEYS)
    if unknown:
        raise InvalidArgument(
            f"unknown field '{unknown[0]}': a generate body holds 'question' (or 'text_input'), 'id' and "
            "'parameters' (model parameters such as max_tokens go inside 'parameters')"
        )
    given = [key for key in QUESTION_ALIASES if key in data]
    if not given:
        raise InvalidArgument("missing field 'question' (or 'text_input'): the question to answer")
    if len(given) > 1:
        raise InvalidArgument("give 'question' or 'text_input', not both")
    value = data[given[0]]
    texts = value if isinstance(value, list) else [value]
    for text in texts:
        if not isinstance(text, str):
            raise InvalidArgument(f"{given[0]} must be a string, got {_kind(value)}")
    tensor = Tensor.from_strings(QUESTION, texts)
    return InferRequest(model, [tensor], read_parameters(data.get("parameters")), _id(data))


# --- responses -----------------------------------------------------------------------------------------


def _values(tensor: Tensor) -> list[Any]:
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        return [bytes(b).decode("utf-8", errors="replace") for b in flat]
    return list(flat.tolist())


def write_tensor(tensor: Tensor) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
        "data": _values(tensor),
    }
    if tensor.parameters:
        out["parameters"] = dict(tensor.parameters)
    return out


def write_infer(response: InferResponse, outputs: Sequence[str] = ()) -> dict[str, Any]:
    """A V2 REST infer response; only the ``outputs`` asked for, when the request named any."""
    tensors = [t for t in response.outputs if not outputs or t.name in outputs]
    out: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version:
        out["model_version"] = response.model_version
    out["id"] = response.id
    out["parameters"] = dict(response.parameters)
    out["outputs"] = [write_tensor(t) for t in tensors]
    return out


def write_generate(response: InferResponse) -> dict[str, Any]:
    """The generate extension's flat object: each output by name (a lone element as itself,
    more as an array), beside ``model_name``, ``id`` and, when there are any, ``parameters``."""
    out: dict[str, Any] = {"model_name": response.model_name, "id": response.id}
    for tensor in response.outputs:
        values = _values(tensor)
        out[tensor.name] = values[0] if len(values) == 1 else values
    if response.parameters:
        out["parameters"] = dict(response.parameters)
    return out


def write_metadata(metadata: ModelMetadata) -> dict[str, Any]:
    def specs(items: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in items]

    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": specs(metadata.inputs),
        "outputs": specs(metadata.outputs),
    }


def write_error(message: str, code: str) -> dict[str, Any]:
    return {"error": message, "code": code}
