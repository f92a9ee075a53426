"""A free local TCP port, for servers that are given none (the nodes, the router, ``ragraph up``
and the tests all ask the OS the same way)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free on ``host`` (an IPv4 address) now; it is not held, so
    another process may take it before the caller binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


__all__ = ["free_port"]
