"""Structured logs shared by every ragraph service: one JSON object per line, carrying the
request id of the call being served (``request_id`` context variable), so one id can be
followed from the router through the encoder and the LLM.

The router sets the id from the V2 request (or makes one) and sends it to every node as the V2
request ``id`` and as ``x-request-id`` metadata; the nodes set it again from either.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Iterable

REQUEST_ID_HEADER = "x-request-id"
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("ragraph_request_id", default=None)

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


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, fmt: str = "json", loggers: Iterable[str] = ("",)) -> None:
    """Send the named loggers (default: the root) to stderr in ``json`` or ``text`` form."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    for name in loggers:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        if name:
            logger.propagate = False
