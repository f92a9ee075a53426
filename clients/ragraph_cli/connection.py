"""Connection flags shared by the commands that call a server: TLS, mTLS and the API key."""

from __future__ import annotations

import argparse
import os
from typing import Any

API_KEY_ENV = "RAGRAPH_API_KEY"


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--tls", action="store_true", help="connect over TLS (system roots unless --ca)")
    group.add_argument("--ca", help="PEM CA bundle the server's certificate must chain to (implies --tls)")
    group.add_argument("--cert", help="PEM client certificate, for mTLS (with --key)")
    group.add_argument("--key", help="PEM private key of --cert")
    group.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV), help=f"API key for the router (default ${API_KEY_ENV})"
    )


def client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``InferenceClient`` from the flags above."""
    return {
        "tls": bool(getattr(args, "tls", False)),
        "ca": getattr(args, "ca", None),
        "cert": getattr(args, "cert", None),
        "key": getattr(args, "key", None),
        "api_key": getattr(args, "api_key", None),
    }
