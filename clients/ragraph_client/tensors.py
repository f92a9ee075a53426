"""Typed V2 tensors, requests and responses, and the codecs between them and the wire.

Nothing here imports generated stubs: the wire helpers (:func:`decode_wire_tensor`,
:func:`encode_raw`) take any V2 tensor message by its fields, so the same validation serves our
stubs, MLServer's and tritonclient's alike.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidArgument, NotFound

Param = bool | int | float | str

# datatype -> (numpy dtype, field of InferTensorContents holding it when sent typed)
DATATYPES: dict[str, tuple[Any, str]] = {
    "BOOL": (np.dtype(np.bool_), "bool_contents"),
    "UINT8": (np.dtype("<u1"), "uint_contents"),
    "UINT16": (np.dtype("<u2"), "uint_contents"),
    "UINT32": (np.dtype("<u4"), "uint_contents"),
    "UINT64": (np.dtype("<u8"), "uint64_contents"),
    "INT8": (np.dtype("<i1"), "int_contents"),
    "INT16": (np.dtype("<i2"), "int_contents"),
    "INT32": (np.dtype("<i4"), "int_contents"),
    "INT64": (np.dtype("<i8"), "int64_contents"),
    "FP16": (np.dtype("<f2"), ""),  # raw only
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
    "BYTES": (np.dtype(object), "bytes_contents"),
}
_NUMPY_TO_DATATYPE = {v[0]: k for k, v in DATATYPES.items() if k != "BYTES"}


def datatype_of(array: np.ndarray) -> str:
    if array.dtype.kind in ("O", "U", "S"):
        return "BYTES"
    try:
        return _NUMPY_TO_DATATYPE[array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype]
    except KeyError:
        raise InvalidArgument(f"numpy dtype {array.dtype} has no V2 datatype") from None


@dataclass
class Tensor:
    """One named tensor. ``data`` is a numpy array of ``shape``; BYTES data is an object array
    of ``bytes``."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Param] = field(default_factory=dict)

    @classmethod
    def from_numpy(cls, name: str, array: np.ndarray, **parameters: Param) -> Tensor:
        array = np.asarray(array)
        datatype = datatype_of(array)
        if datatype == "BYTES":
            return cls.from_strings(name, list(array.reshape(-1)), shape=list(array.shape), **parameters)
        return cls(name, datatype, list(array.shape), array, dict(parameters))

    @classmethod
    def from_strings(
        cls, name: str, items: Iterable[str | bytes], shape: Sequence[int] | None = None, **parameters: Param
    ) -> Tensor:
        encoded = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in items]
        data = np.empty(len(encoded), dtype=object)
        data[:] = encoded
        dims = list(shape) if shape is not None else [len(encoded)]
        return cls(name, "BYTES", dims, data.reshape(dims), dict(parameters))

    def as_numpy(self) -> np.ndarray:
        return self.data

    def as_bytes(self) -> list[bytes]:
        if self.datatype != "BYTES":
            raise InvalidArgument(f"tensor '{self.name}' is {self.datatype}, not BYTES")
        return list(self.data.reshape(-1))

    def as_strings(self) -> list[str]:
        out = []
        for i, item in enumerate(self.as_bytes()):
            try:
                out.append(item.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidArgument(
                    f"input '{self.name}': element {i} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
                ) from None
        return out


@dataclass
class InferRequest:
    model_name: str
    inputs: list[Tensor]
    parameters: dict[str, Param] = field(default_factory=dict)
    id: str = ""
    model_version: str = ""
    outputs: list[str] = field(default_factory=list)

    def input(self, name: str) -> Tensor:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise InvalidArgument(f"missing input '{name}'")


@dataclass
class InferResponse:
    model_name: str
    outputs: list[Tensor]
    parameters: dict[str, Param] = field(default_factory=dict)
    id: str = ""
    model_version: str = ""

    def output(self, name: str) -> Tensor:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise NotFound(f"response of model '{self.model_name}' has no output '{name}'")


@dataclass
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]


@dataclass
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


# --- wire helpers -----------------------------------------------------------------------


def pack_bytes(items: Iterable[bytes]) -> bytes:
    """BYTES in raw form: each element a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def unpack_bytes(raw: bytes, count: int, name: str, what: str = "input") -> list[bytes]:
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidArgument(f"{what} '{name}': raw BYTES data ends inside a length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidArgument(
                f"{what} '{name}': raw BYTES element {len(items)} claims {size} bytes, only {len(raw) - offset} left"
            )
        items.append(raw[offset : offset + size])
        offset += size
    if len(items) != count:
        raise InvalidArgument(f"{what} '{name}': shape holds {count} elements but raw data holds {len(items)}")
    return items


def encode_raw(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return pack_bytes(tensor.as_bytes())
    dtype = DATATYPES[tensor.datatype][0]
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


def check_shape(name: str, shape: Sequence[int], what: str = "input") -> int:
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"{what} '{name}': shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def decode_wire_tensor(
    name: str, datatype: str, shape: Sequence[int], contents: Any, raw: bytes | None, what: str = "input"
) -> np.ndarray:
    """Decode one tensor as it came over the wire (typed ``contents`` or a ``raw`` entry),
    checking that datatype, shape and data agree. Raises InvalidArgument naming the tensor."""
    if datatype not in DATATYPES:
        raise InvalidArgument(
            f"{what} '{name}': unknown datatype '{datatype}' (expected one of {', '.join(DATATYPES)})"
        )
    count = check_shape(name, shape, what)
    dtype, field_name = DATATYPES[datatype]
    dims = list(shape)
    if raw is not None:
        if datatype == "BYTES":
            items = unpack_bytes(raw, count, name, what)  # checks the count before anything is allocated
            out = np.empty(len(items), dtype=object)
            out[:] = items
            return out.reshape(dims)
        needed = count * dtype.itemsize
        if len(raw) != needed:
            raise InvalidArgument(
                f"{what} '{name}': shape {dims} of {datatype} needs {needed} bytes, raw data has {len(raw)}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(dims)
    if not field_name:
        raise InvalidArgument(f"{what} '{name}': {datatype} data must be sent in raw_{what}_contents")
    values = getattr(contents, field_name) if contents is not None else []
    if len(values) != count:
        raise InvalidArgument(f"{what} '{name}': shape {dims} holds {count} elements but contents hold {len(values)}")
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        out[:] = list(values)
        return out.reshape(dims)
    return to_array(datatype, values, f"{what} '{name}'").reshape(dims)


_INT_RANGES = {
    name: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    for name, (dtype, _) in DATATYPES.items()
    if dtype.kind in "iu"
}


def to_array(datatype: str, items: Sequence[Any], where: str) -> np.ndarray:
    """A flat numeric array of ``datatype`` from Python values (typed wire contents, JSON data),
    checked first: integer datatypes take integers within their range (an INT8 holding 300, a
    UINT8 holding -1 or 2.5 is InvalidArgument naming the element, never wrapped or truncated);
    the others take what numpy converts. BYTES is not handled here."""
    dtype = DATATYPES[datatype][0]
    bounds = _INT_RANGES.get(datatype)
    if bounds is not None and len(items):
        low, high = bounds
        wide = np.asarray(items)  # int64/uint64 when every item is an integer that fits one
        if wide.dtype.kind not in "iu" or int(wide.min()) < low or int(wide.max()) > high:
            _refuse_ints(items, datatype, where, low, high)
    try:
        return np.array(items, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidArgument(f"{where}: the data does not fit {datatype} ({exc})") from None


def _refuse_ints(items: Sequence[Any], datatype: str, where: str, low: int, high: int) -> None:
    """Raise InvalidArgument naming the first element that is not an integer in range."""
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, int | np.integer):
            raise InvalidArgument(f"{where}: element {i} is {item!r}, not an integer ({datatype})")
        if not low <= item <= high:
            raise InvalidArgument(f"{where}: element {i} is {item}, outside {datatype}'s range {low}..{high}")
    raise InvalidArgument(f"{where}: the data does not fit {datatype}")  # pragma: no cover - found above


def has_typed_contents(contents: Any) -> bool:
    return contents is not None and any(getattr(contents, f) for _, f in DATATYPES.values() if f)


def decode_wire_tensors(tensors: Sequence[Any], raw_contents: Sequence[bytes], what: str = "input") -> list[np.ndarray]:
    """Decode every tensor of a request or response message (duck-typed). Raw and typed data
    must not be mixed, and raw data needs one entry per tensor."""
    names = [t.name for t in tensors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidArgument(f"{what} '{duplicates[0]}' is given more than once")
    if raw_contents:
        if len(raw_contents) != len(tensors):
            raise InvalidArgument(f"raw_{what}_contents has {len(raw_contents)} entries for {len(tensors)} {what}s")
        for t in tensors:
            if has_typed_contents(t.contents):
                raise InvalidArgument(f"{what} '{t.name}': typed contents given together with raw_{what}_contents")
    return [
        decode_wire_tensor(
            t.name, t.datatype, list(t.shape), t.contents, raw_contents[i] if raw_contents else None, what
        )
        for i, t in enumerate(tensors)
    ]
