"""Loopback ports for ``ragraph up``: is one free, is something listening, three free blocks."""

from __future__ import annotations

import socket

from ragraph_client.net import free_port


def connect_host(host: str) -> str:
    """Where clients reach a server bound to ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on ``host:port`` now (SO_REUSEADDR, as gRPC servers bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((connect_host(host), port), timeout=timeout):
            return True
    except OSError:
        return False


def free_ports(host: str = "127.0.0.1") -> tuple[int, int, int]:
    """Free gRPC ports for encoder, llm and router whose neighbours (HTTP -1, metrics +1) are free too."""
    found: list[int] = []
    while len(found) < 3:
        port = free_port(connect_host(host))
        block = {port - 1, port, port + 1}
        if 1024 < port < 65535 and not block & {p + d for p in found for d in (-1, 0, 1)}:
            if all(port_free(p, host) for p in block):
                found.append(port)
    return found[0], found[1], found[2]
