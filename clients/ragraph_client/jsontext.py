"""Reading JSON that a caller sent (a REST body, a ``filter``, ``stop``, ``context`` or
``messages`` parameter): one reader with limits, so that no caller's JSON can reach the code
behind it as a Python error (RecursionError, UnicodeEncodeError) instead of INVALID_ARGUMENT.

Refused, with a message that names the field and where in it: text that is not JSON;
``NaN`` / ``Infinity`` (not JSON); nesting deeper than :data:`MAX_DEPTH` arrays/objects; a
string or key holding a lone UTF-16 surrogate (``"\\ud800"``), which no UTF-8 encoder takes.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidArgument

MAX_DEPTH = 32  # arrays/objects inside one another; no ragraph document needs more than 5


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``text``; InvalidArgument naming ``what`` (e.g. ``parameter 'stop'``)
    when it is not JSON or breaks a limit."""
    try:
        value = json.loads(text, parse_constant=_constant)
    except RecursionError:
        raise InvalidArgument(f"{what} is nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # a NaN/Infinity constant, bytes that are not UTF-8
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None
    check(value, what, max_depth)
    return value


def check(value: Any, what: str, max_depth: int = MAX_DEPTH) -> None:
    """The limits of :func:`loads`, on a value already parsed (iteratively: a deep value cannot
    exhaust the stack here)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _text(item, what, path)
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise InvalidArgument(f"{what} is nested deeper than {max_depth} levels (at {_short(path)})")
            if isinstance(item, dict):
                for key, sub in item.items():
                    _text(key, what, f"{path}.{key}" if path else str(key))
                    stack.append((sub, f"{path}.{key}" if path else str(key), depth + 1))
            else:
                stack.extend((sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item))


def _text(text: str, what: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = f" at {_short(path)}" if path else ""
        raise InvalidArgument(
            f"{what}{where}: string holds a lone UTF-16 surrogate ({ascii(text[exc.start])} at character "
            f"{exc.start}); send valid Unicode"
        ) from None


def _short(path: str) -> str:
    """The path for a message: cut to its last 60 characters, lone surrogates escaped."""
    path = path if len(path) <= 60 else "..." + path[-57:]
    return path.encode("utf-8", "backslashreplace").decode("utf-8")
