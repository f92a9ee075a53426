"""``ragraph graph check [FILE]``: the router's contract check, on demand, against the live nodes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragraph_router.graph import Graph


async def _run_check(graph: Graph, timeout: float) -> list[str]:
    from ragraph_client.client import AsyncInferenceClient
    from ragraph_client.headers import service_token_headers
    from ragraph_router import contract
    from ragraph_router.nodes import ModelNode

    from .tokens import resolve

    # the servers the check asks: each MODEL node's and each output guard's
    models = graph.of(ModelNode)
    urls = sorted({n.target[0] for n in models} | {n.output_guard.url for n in models if n.output_guard})
    # nodes that require the service token get it as ``ragraph ingest`` finds it: the router's
    # $RAGRAPH_ROUTER_NODE_TOKEN, $RAGRAPH_SERVICE_TOKEN or ``ragraph up``'s file
    clients = {url: AsyncInferenceClient(url, headers=service_token_headers(resolve(None, url))) for url in urls}
    try:
        return await contract.check(graph, clients, timeout=timeout)
    finally:
        for client in clients.values():
            await client.close()


def check(args: argparse.Namespace) -> int:
    from ragraph_router.graph import load
    from ragraph_router.nodes import CacheNode, ModelNode, RetrieverNode

    # the shipped graph reads its node URLs from these (${VAR:-default}), expanded at load time
    if args.encoder_url:
        os.environ["RAGRAPH_ENCODER_URL"] = args.encoder_url
    if args.llm_url:
        os.environ["RAGRAPH_LLM_URL"] = args.llm_url
    graph = load(args.file)
    problems = asyncio.run(_run_check(graph, args.timeout))
    models = [{"node": n.name, "model": n.target[1], "url": n.target[0]} for n in graph.of(ModelNode)]
    stores = sorted({n.store for n in graph.of(RetrieverNode)} | {n.store for n in graph.of(CacheNode)})
    source = args.file or "the shipped rag graph"
    if args.json:
        print(
            json.dumps(
                {
                    "graph": graph.name,
                    "file": args.file,
                    "ok": not problems,
                    "problems": problems,
                    "models": models,
                    "stores": stores,
                }
            )
        )
        return 0 if not problems else 1
    servers = sorted({m["url"] for m in models})
    if not problems:
        print(
            f"OK: graph {graph.name} ({source}): {len(graph.nodes)} nodes; every edge of its {len(models)} "
            f"MODEL nodes fits what {', '.join(servers) or 'no server'} declare"
        )
        return 0
    print(f"graph {graph.name} ({source}): {len(problems)} problem(s)")
    for problem in problems:
        print(f"  {problem}")
    return 1


def add_command(commands: Any) -> None:
    graph = commands.add_parser("graph", help="work with graph files")
    sub = graph.add_subparsers(dest="graph_command", required=True)
    p = sub.add_parser(
        "check",
        help="check a graph's edges against the live nodes' metadata (exit 0 OK, 1 problems)",
        description="Load a graph (default: the shipped rag graph), fetch every MODEL node's metadata and "
        "check each edge: the inputs sent and the outputs read. The same check the router runs before it "
        "reports ready. Node URLs come from the graph, with ${RAGRAPH_ENCODER_URL} / ${RAGRAPH_LLM_URL} "
        "expanded from the environment.",
    )
    p.add_argument("file", nargs="?", help="graph YAML (default: the shipped rag graph)")
    p.add_argument("--encoder-url", help="sets $RAGRAPH_ENCODER_URL before the graph is loaded")
    p.add_argument("--llm-url", help="sets $RAGRAPH_LLM_URL before the graph is loaded")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per node call (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object: graph, ok, problems, models, stores")
    p.set_defaults(func=check)
