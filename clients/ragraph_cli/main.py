"""``ragraph`` — serve the graph's services and talk to them.

Each service command imports its server lazily: MLServer's generated stubs and ours cannot live
in one process, so ``serve encoder`` must not load the client stubs, and vice versa.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _serve_encoder(args: argparse.Namespace) -> int:
    from ragraph_encoder.server import create_server
    from ragraph_encoder.settings import EncoderSettings
    from ragraph_serving.server import run

    overrides = {
        k: v
        for k, v in {
            "model": args.model,
            "grpc_port": args.grpc_port,
            "http_port": args.http_port,
            "metrics_port": args.metrics_port,
            "host": args.host,
            "device": args.device,
        }.items()
        if v is not None
    }
    if args.labelset:
        labelsets = EncoderSettings().labelsets
        for item in args.labelset:
            name, sep, path = item.partition("=")
            if not sep:
                print(f"ragraph: --labelset wants NAME=PATH, got {item!r}", file=sys.stderr)
                return 2
            labelsets[name] = path
        overrides["labelsets"] = labelsets
    settings = EncoderSettings(**overrides)
    server, port = create_server(settings)
    run(server, settings.log_level)
    return 0


def _infer(args: argparse.Namespace) -> int:
    from ragraph_client.client import InferenceClient

    params = json.loads(args.params) if args.params else {}
    with InferenceClient(args.url, timeout=args.timeout) as client:
        response = client.infer(args.model, {args.input: list(args.texts)}, params)
    out = {
        "model_name": response.model_name,
        "parameters": response.parameters,
        "outputs": {
            t.name: (t.as_strings() if t.datatype == "BYTES" else t.as_numpy().tolist()) for t in response.outputs
        },
    }
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragraph", description="RAG inference graph on the V2 protocol.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service of the graph")
    services = serve.add_subparsers(dest="service", required=True)
    encoder = services.add_parser("encoder", help="embeddings + classifier on MLServer")
    encoder.add_argument("--model", help="sentence-transformers model id or local path")
    encoder.add_argument("--grpc-port", type=int)
    encoder.add_argument("--http-port", type=int)
    encoder.add_argument("--metrics-port", type=int)
    encoder.add_argument("--host")
    encoder.add_argument("--device", choices=["auto", "cpu", "cuda"])
    encoder.add_argument(
        "--labelset", action="append", metavar="NAME=PATH", help="add or replace a classifier label set"
    )
    encoder.set_defaults(func=_serve_encoder)

    infer = commands.add_parser("infer", help="send texts to a V2 model and print the outputs")
    infer.add_argument("model")
    infer.add_argument("texts", nargs="+")
    infer.add_argument("--url", default="127.0.0.1:8101", help="host:port of the V2 gRPC server")
    infer.add_argument("--input", default="text", help="name of the BYTES input")
    infer.add_argument("--params", help="request parameters as a JSON object")
    infer.add_argument("--timeout", type=float, default=30.0)
    infer.add_argument("--json", action="store_true", help="one-line JSON")
    infer.set_defaults(func=_infer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:  # readable one-line errors for ragraph's own error types
        from ragraph_client.errors import RagraphError

        if isinstance(exc, RagraphError):
            print(f"ragraph: {exc.code.name}: {exc.message}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
