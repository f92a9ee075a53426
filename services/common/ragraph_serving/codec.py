"""The converter between MLServer's pydantic request/response types and ragraph's typed
objects. Runtimes see only :class:`ragraph_client.tensors.InferRequest` / ``InferResponse``."""

from __future__ import annotations

from typing import Any

import numpy as np
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput
from ragraph_client.errors import InvalidArgument
from ragraph_client.tensors import DATATYPES, InferRequest, InferResponse, Param, Tensor, check_shape, to_array

_RESERVED = {"content_type", "headers"}


def _params(parameters: Parameters | None) -> dict[str, Param]:
    if parameters is None:
        return {}
    return {k: v for k, v in parameters.model_dump(exclude_none=True).items() if k not in _RESERVED}


def _tensor(name: str, datatype: Any, shape: list[int], data: Any, parameters: Parameters | None) -> Tensor:
    datatype = getattr(datatype, "value", datatype)
    if datatype not in DATATYPES:
        raise InvalidArgument(f"input '{name}': unknown datatype '{datatype}'")
    count = check_shape(name, shape)
    items = list(getattr(data, "root", data) or [])
    if len(items) != count:
        raise InvalidArgument(f"input '{name}': shape {shape} holds {count} elements but data holds {len(items)}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in items]
    else:
        array = to_array(datatype, items, f"input '{name}'")  # an INT8 holding 300: INVALID_ARGUMENT, not 500
    return Tensor(name, datatype, shape, array.reshape(shape), _params(parameters))


def request_from_mlserver(payload: InferenceRequest, model_name: str) -> InferRequest:
    inputs = [_tensor(i.name, i.datatype, list(i.shape), i.data, i.parameters) for i in payload.inputs]
    return InferRequest(
        model_name=model_name,
        inputs=inputs,
        parameters=_params(payload.parameters),
        id=payload.id or "",
        outputs=[o.name for o in payload.outputs or []],
    )


def response_to_mlserver(response: InferResponse) -> InferenceResponse:
    outputs = []
    for tensor in response.outputs:
        flat = tensor.data.reshape(-1)
        data = list(flat) if tensor.datatype == "BYTES" else flat.tolist()
        outputs.append(
            ResponseOutput(
                name=tensor.name,
                shape=tensor.shape,
                datatype=tensor.datatype,
                data=data,
                parameters=Parameters(**tensor.parameters) if tensor.parameters else None,
            )
        )
    return InferenceResponse(
        model_name=response.model_name,
        model_version=response.model_version or None,
        id=response.id or None,
        parameters=Parameters(**response.parameters) if response.parameters else None,
        outputs=outputs,
    )
