"""Reading request parameters leniently: V2 peers send the same value as bool, int, double or
string (tritonclient sends floats as double_param, which MLServer 1.7.1 drops, so our MLServer
nodes also take numbers written as strings). Each reader names the parameter when it fails."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import jsontext
from .errors import InvalidArgument

# Flags V2 peers send by themselves: tritonclient.grpc's enable_empty_final_response on streams,
# tritonclient.http's binary_data_output, and MLServer codecs' content_type. A model accepts them
# beside its own parameters.
PROTOCOL = ("triton_enable_empty_final_response", "binary_data_output", "content_type")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def get_bool(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidArgument(f"parameter '{name}' must be a boolean, got {value!r}")


def get_float(params: Mapping[str, Any], name: str, default: float | None) -> float | None:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        raise InvalidArgument(f"parameter '{name}' must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"parameter '{name}' must be a number, got {value!r}") from None


def get_int(params: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        raise InvalidArgument(f"parameter '{name}' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)  # exact, however large (a float would round past 2**53)
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"parameter '{name}' must be an integer, got {value!r}") from None
    if not as_float.is_integer():
        raise InvalidArgument(f"parameter '{name}' must be an integer, got {value!r}")
    return int(as_float)


def get_str(params: Mapping[str, Any], name: str, default: str | None) -> str | None:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidArgument(f"parameter '{name}' must be a string, got {value!r}")
    return value


def get_json(params: Mapping[str, Any], name: str, default: Any) -> Any:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidArgument(f"parameter '{name}' must be a JSON string, got {value!r}")
    return jsontext.loads(value, f"parameter '{name}'")


def check_known(params: Mapping[str, Any], known: tuple[str, ...] | list[str], model: str) -> None:
    """INVALID_ARGUMENT naming the first parameter that ``model`` does not take (peers' protocol
    flags excepted), listing those it does: a parameter is never ignored without a word."""
    unknown = sorted(set(params) - set(known) - set(PROTOCOL))
    if unknown:
        raise InvalidArgument(
            f"unknown parameter '{unknown[0]}' for model '{model}' (it takes: {', '.join(sorted(known))})"
        )
