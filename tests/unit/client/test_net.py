"""ragraph_client.net.free_port: the one way the nodes, the router, ``ragraph up`` and the tests
pick a port when given none."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from ragraph_client.net import free_port


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_the_port_can_be_bound_on_that_host(host: str) -> None:
    port = free_port(host)
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, port))


def test_loopback_by_default() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_no_heavy_imports() -> None:
    code = "import sys, ragraph_client.net\nprint(sorted({'torch', 'mlserver'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
