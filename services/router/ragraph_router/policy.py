"""A node's call policy: its share of the request deadline (``timeout_ms``), its retries on
UNAVAILABLE, and how its errors name it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ragraph_client.errors import DeadlineExceeded, RagraphError, Unavailable

from .nodes import NodeBase
from .values import NodeStatus

T = TypeVar("T")
_RETRYABLE = (Unavailable,)


async def attempts(node: NodeBase, status: NodeStatus, deadline: float, call: Callable[[float], Awaitable[T]]) -> T:
    """``call(timeout)`` under the node's deadline share and retries."""
    for attempt in range(node.retries + 1):
        timeout = share(node, deadline)
        status.attempts = attempt + 1
        try:
            return await asyncio.wait_for(call(timeout), timeout)
        except TimeoutError:
            error: RagraphError = DeadlineExceeded(f"node {node.name}: no answer within {timeout * 1000:.0f} ms")
        except RagraphError as exc:
            error = exc
        if attempt == node.retries or not isinstance(error, _RETRYABLE):
            raise error
        await asyncio.sleep(min(0.05 * 2**attempt, max(0.0, deadline - time.monotonic())))
    raise AssertionError("unreachable")


def share(node: NodeBase, deadline: float) -> float:
    """Seconds this node may take: what is left of the request, capped by its ``timeout_ms``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0.001:
        raise DeadlineExceeded(f"node {node.name}: the request deadline expired before it could run")
    return min(remaining, node.timeout_ms / 1000) if node.timeout_ms else remaining


def named(node: NodeBase, message: str) -> str:
    """The message with the node's name and far end (``model@url`` or store) in front (once)."""
    prefix = f"node {node.name}"
    rest = message[len(prefix) :].lstrip(":").lstrip() if message.startswith(prefix) else message
    address = node.address()
    return f"{prefix} ({address}): {rest}" if address else f"{prefix}: {rest}"
