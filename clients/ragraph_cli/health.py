"""``ragraph health HOST:PORT [--service NAME] [--timeout S]``: one grpc.health.v1 Check.

Exit status 0 when the answer is SERVING, 1 for anything else (NOT_SERVING, an unknown service
name, nothing listening, a timeout). It prints one line either way, so it fits a Dockerfile
HEALTHCHECK or an exec probe. Every ragraph service serves grpc.health.v1: the router always,
the encoder and the llm through ``ragraph_serving.health``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc


def _channel(target: str, args: argparse.Namespace) -> grpc.Channel:
    import grpc

    if not (args.tls_ca or args.tls_cert):
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(args.tls_ca).read_bytes() if args.tls_ca else None,
        private_key=Path(args.tls_key).read_bytes() if args.tls_key else None,
        certificate_chain=Path(args.tls_cert).read_bytes() if args.tls_cert else None,
    )
    return grpc.secure_channel(target, credentials)


def check(target: str, service: str = "", timeout: float = 3.0, args: argparse.Namespace | None = None) -> int:
    """One Check against ``target``; prints one line and returns the exit status."""
    import grpc  # here, not at import: `ragraph --help` and the other commands stay fast
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    args = args or argparse.Namespace(tls_ca=None, tls_cert=None, tls_key=None)
    name = repr(service) if service else "'' (whole server)"
    with _channel(target, args) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.NOT_FOUND:
                print(f"UNKNOWN: {target} does not know service {name}")
            else:
                detail = (exc.details() if hasattr(exc, "details") else "") or ""
                first = detail.splitlines()[0] if detail else ""
                print(f"UNREACHABLE: {target} {code.name if code else 'ERROR'}: {first}".rstrip(": "))
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{status}: {target} service {name}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _run(args: argparse.Namespace) -> int:
    return check(args.target, args.service, args.timeout, args)


def add_command(commands: Any) -> None:
    parser = commands.add_parser(
        "health",
        help="grpc.health.v1 Check: exit 0 when SERVING, 1 otherwise",
        description="One grpc.health.v1 Check against a ragraph service (or any gRPC server). Prints one line; "
        "exit status 0 when SERVING, 1 when NOT_SERVING, unknown or unreachable.",
    )
    parser.add_argument("target", metavar="HOST:PORT", help="gRPC address, e.g. 127.0.0.1:8101")
    parser.add_argument("--service", default="", help="service name: '' (default) for the whole server, or a model")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    parser.add_argument("--tls-ca", help="PEM CA bundle: talk TLS and verify the server against it")
    parser.add_argument("--tls-cert", help="PEM client certificate chain (mTLS)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.set_defaults(func=_run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ragraph health")
    add_command(parser.add_subparsers(dest="command", required=True))
    return int(_run(parser.parse_args(["health", *(sys.argv[1:] if argv is None else argv)])))


if __name__ == "__main__":
    sys.exit(main())
