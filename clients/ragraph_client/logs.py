"""Structured logs shared by every ragraph service: one JSON object per line, carrying the
request id of the call being served (``request_id`` context variable), so one id can be
followed from the router through the encoder and the LLM.

The router sets the id from the V2 request (or makes one) and sends it to every node as the V2
request ``id`` and as ``x-request-id`` metadata (``headers.REQUEST_ID_HEADER``); the nodes set it
again from either.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable

from .errors import InvalidArgument

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("ragraph_request_id", default=None)

MAX_REQUEST_ID_CHARS = 128
# printable ASCII without space: what gRPC metadata and HTTP headers carry unchanged, and what
# cannot break a log line
_REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID_CHARS}}}")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def new_request_id() -> str:
    return uuid.uuid4().hex


def check_request_id(value: str, field: str) -> str:
    """``value`` when it is a usable request id: 1 to :data:`MAX_REQUEST_ID_CHARS` printable
    ASCII characters, no spaces (``[!-~]``). InvalidArgument naming ``field`` otherwise; the
    message shows the value escaped and cut short, so it is safe to log and to send back."""
    if _REQUEST_ID.fullmatch(value):
        return value
    shown = ascii(value[:40]) + ("..." if len(value) > 40 else "")
    raise InvalidArgument(
        f"{field} must be 1 to {MAX_REQUEST_ID_CHARS} printable ASCII characters without spaces "
        f"([!-~]), got {shown} ({len(value)} characters)"
    )


def escape_controls(text: str) -> str:
    """``text`` with newlines and other control characters (tab aside) written as escapes, so
    that one log record stays one line."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


# LogRecord attributes that are not "extra" fields a caller attached
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id"?, "exc"?, **extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            out["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "request_id" and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s"


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> [<request id>]: <message>`` for people. The message and the id
    are written with control characters escaped: a newline that came from a caller (in a
    request id, a question) cannot start a line that looks like another record. A traceback
    follows on lines of its own, as usual."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        rid = getattr(record, "request_id", None) or request_id.get()
        record.rid = f" [{escape_controls(str(rid))}]" if rid else ""
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def configure(level: str, fmt: str = "json", loggers: Iterable[str] = ("",)) -> None:
    """Send the named loggers (default: the root) to stderr in ``json`` or ``text`` form."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for name in loggers:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        if name:
            logger.propagate = False
