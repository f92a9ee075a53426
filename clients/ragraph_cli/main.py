"""``ragraph`` — serve the graph's services and talk to them.

Each service command imports its server lazily: MLServer's generated stubs and ours cannot live
in one process, so ``serve encoder`` must not load the client stubs, and vice versa.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .connection import add_connection_args, client_kwargs


def _overrides(args: argparse.Namespace, names: Sequence[str]) -> dict[str, object]:
    """Settings fields given on the command line (the rest come from env vars and defaults)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


_COMMON = ("model", "grpc_port", "http_port", "metrics_port", "host", "device")


def _serve_node(settings: Any, create_server: Callable[[Any], tuple[Any, int]], server_name: str) -> int:
    """Serve an MLServer-hosted node: its own settings, or, when launched the way MLServer's image
    is (``MLSERVER_MODELS_DIR`` set, e.g. by Seldon Core 2), the ``MLSERVER_*`` settings and models dir."""
    from ragraph_serving import mlserver_env, mlserver_patch
    from ragraph_serving.server import run

    try:
        if mlserver_env.requested():
            server = mlserver_env.create_from_environment(settings, server_name)
        else:
            server, _ = create_server(settings)
    except (mlserver_env.LaunchError, mlserver_patch.UnsupportedMLServer) as exc:
        print(f"ragraph: {exc}", file=sys.stderr)
        return 2
    run(server, settings.log_level, settings.log_format)
    return 0


# What each node's extra installs: without them `ragraph serve NODE` names the extra to install.
_EXTRA_MODULES = ("torch", "mlserver", "sentence_transformers", "transformers", "gguf", "accelerate")


def _needs_extra(node: str, serve: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return serve(args)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing not in _EXTRA_MODULES:
                raise
            print(
                f"ragraph: serving the {node} needs the '{node}' extra ({missing} is not installed): "
                f"pip install 'ragraph[{node}]' (torch==2.13.0 first, as the Makefile does)",
                file=sys.stderr,
            )
            return 2

    return run


def _serve_encoder(args: argparse.Namespace) -> int:
    from ragraph_encoder.server import create_server
    from ragraph_encoder.settings import EncoderSettings

    overrides = _overrides(args, _COMMON)
    if args.labelset:
        labelsets = EncoderSettings().labelsets
        for item in args.labelset:
            name, sep, path = item.partition("=")
            if not sep:
                print(f"ragraph: --labelset wants NAME=PATH, got {item!r}", file=sys.stderr)
                return 2
            labelsets[name] = path
        overrides["labelsets"] = labelsets
    settings = EncoderSettings(**overrides)  # type: ignore[arg-type]
    return _serve_node(settings, create_server, "ragraph-encoder")


def _serve_llm(args: argparse.Namespace) -> int:
    from ragraph_llm.server import create_server
    from ragraph_llm.settings import LLMSettings

    fields = (*_COMMON, "gguf_file", "dtype", "max_batch_size", "max_queued", "context_window")
    settings = LLMSettings(**_overrides(args, fields))  # type: ignore[arg-type]
    return _serve_node(settings, create_server, "ragraph-llm")


def _serve_router(args: argparse.Namespace) -> int:
    from ragraph_router.server import create_server, run
    from ragraph_router.settings import RouterSettings

    fields = (
        "graph",
        "grpc_port",
        "http_port",
        "metrics_port",
        "host",
        "model_name",
        "api_keys_file",
        "redis_url",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
    )
    settings = RouterSettings(**_overrides(args, fields))  # type: ignore[arg-type]
    server, _ = create_server(settings)
    run(server)
    return 0


def _add_common(parser: argparse.ArgumentParser, model_help: str) -> None:
    parser.add_argument("--model", help=model_help)
    parser.add_argument("--grpc-port", type=int)
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--host")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])


def _infer(args: argparse.Namespace) -> int:
    from ragraph_client.client import InferenceClient

    params = json.loads(args.params) if args.params else {}
    with InferenceClient(args.url, timeout=args.timeout, **client_kwargs(args)) as client:
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
    _add_common(encoder, "sentence-transformers model id or local path")
    encoder.add_argument(
        "--labelset", action="append", metavar="NAME=PATH", help="add or replace a classifier label set"
    )
    encoder.set_defaults(func=_needs_extra("encoder", _serve_encoder))

    llm = services.add_parser("llm", help="a Hugging Face causal LM on MLServer (streaming, batching)")
    _add_common(llm, "auto (default), hub id, save_pretrained directory, or .gguf file")
    llm.add_argument("--gguf-file", help="a GGUF file inside the --model directory or hub repository")
    llm.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    llm.add_argument("--max-batch-size", type=int, help="most sequences generated together")
    llm.add_argument("--max-queued", type=int, help="most waiting requests before RESOURCE_EXHAUSTED")
    llm.add_argument("--context-window", type=int, help="override the model's context window (tokens)")
    llm.set_defaults(func=_needs_extra("llm", _serve_llm))

    router = services.add_parser("router", help="the RAG graph: our own grpc.aio V2 server over the other nodes")
    router.add_argument("--graph", help="graph YAML, or a shipped graph by name: rag (default), rag-cached")
    router.add_argument("--grpc-port", type=int)
    router.add_argument("--http-port", type=int, help="REST + SSE gateway port (-1: off)")
    router.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (-1: off)")
    router.add_argument("--host")
    router.add_argument("--api-keys-file", help="key file written by `ragraph keys` (turns on API keys)")
    router.add_argument("--redis-url", help="redis://...: rate-limit buckets shared by router replicas")
    router.add_argument("--tls-cert", help="PEM certificate chain: serve over TLS")
    router.add_argument("--tls-key", help="PEM private key of --tls-cert")
    router.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates (mTLS)")
    router.add_argument("--model-name", help="V2 model name of the graph (default rag)")
    router.set_defaults(func=_serve_router)

    infer = commands.add_parser("infer", help="send texts to a V2 model and print the outputs")
    infer.add_argument("model")
    infer.add_argument("texts", nargs="+")
    infer.add_argument("--url", default="127.0.0.1:8101", help="host:port of the V2 gRPC server")
    infer.add_argument("--input", default="text", help="name of the BYTES input")
    infer.add_argument("--params", help="request parameters as a JSON object")
    infer.add_argument("--timeout", type=float, default=30.0)
    infer.add_argument("--json", action="store_true", help="one-line JSON")
    add_connection_args(infer)
    infer.set_defaults(func=_infer)

    from .retrieval import add_commands

    add_commands(commands)
    from . import ask, graph_cmd, up

    up.add_command(commands)
    ask.add_command(commands)
    graph_cmd.add_command(commands)
    from . import keys

    keys.add_command(commands)
    from . import health

    health.add_command(commands)
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
