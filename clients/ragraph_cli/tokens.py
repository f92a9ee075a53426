"""The node service token on the command line: which one ``ragraph ingest``, ``search`` and
``graph check`` send, and where ``ragraph up`` leaves the one it generates.

``ragraph up`` generates a token per run, hands it to its three children by environment, and
writes it (mode 0600) to ``.ragraph/tokens/HOST_PORT`` for each node it started, removing the
files when it stops. A client sends ``--token``, else ``$RAGRAPH_SERVICE_TOKEN``, else the
router's ``$RAGRAPH_ROUTER_NODE_TOKEN`` (so ``ragraph ingest`` works inside a router container),
else the file written for the node's address, and that only for a loopback address (a token
``up`` generated never leaves the machine).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

TOKEN_ENV = "RAGRAPH_SERVICE_TOKEN"
ROUTER_TOKEN_ENV = "RAGRAPH_ROUTER_NODE_TOKEN"
TOKENS_DIR = Path(".ragraph") / "tokens"


def generate() -> str:
    return secrets.token_urlsafe(32)


def _host_port(url: str) -> tuple[str, str]:
    address = url.split("://", 1)[-1].rstrip("/")
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def is_loopback(url: str) -> bool:
    host, _ = _host_port(url)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_file(url: str, root: Path | None = None) -> Path:
    host, port = _host_port(url)
    return (root or Path.cwd()) / TOKENS_DIR / f"{host}_{port}"


def write_token(url: str, token: str, root: Path | None = None) -> Path:
    """The token into the node's file, readable by this user only."""
    path = token_file(url, root)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return path


def remove_token(url: str, token: str, root: Path | None = None) -> None:
    """Remove the node's file if it still holds ``token`` (a later ``up`` may have replaced it)."""
    path = token_file(url, root)
    try:
        if path.read_text().strip() == token:
            path.unlink()
    except OSError:
        pass


def resolve(flag: str | None, url: str) -> str | None:
    """The token to send to the node at ``url``: the flag, the variable, or ``up``'s file."""
    if flag:
        return flag
    for name in (TOKEN_ENV, ROUTER_TOKEN_ENV):
        if os.environ.get(name):
            return os.environ[name]
    if not is_loopback(url):
        return None
    try:
        return token_file(url).read_text().strip() or None
    except OSError:
        return None
