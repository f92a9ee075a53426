"""``ragraph ask``: one question to the router's ``rag`` model, the answer with its sources,
verdicts and timings (``--stream`` prints the answer as it is generated)."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from .connection import add_connection_args, client_kwargs

ROUTER_URL_ENV = "RAGRAPH_ROUTER_URL"


@dataclass
class Answer:
    """Everything the ``rag`` model returned for one question."""

    answer: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""
    guard: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "sources": self.sources,
            "label": self.label,
            "guard": self.guard,
            "parameters": self.parameters,
            "nodes": self.nodes,
        }


def _text(tensor: Any) -> str:
    return "".join(tensor.as_strings())


def _finish(answer: Answer, outputs: dict[str, str], parameters: dict[str, Any]) -> None:
    """Fill ``answer`` from the final message's outputs and parameters (nodes and debug parsed)."""
    answer.label = outputs.get("label", answer.label)
    answer.guard = outputs.get("guard", answer.guard)
    params = {k: v for k, v in parameters.items() if k != "triton_final_response"}
    nodes = params.pop("nodes", None)
    answer.nodes = json.loads(nodes) if isinstance(nodes, str) and nodes else {}
    if isinstance(params.get("debug"), str):
        params["debug"] = json.loads(params["debug"])
    answer.parameters = params


def request_params(args: argparse.Namespace) -> dict[str, Any]:
    from ragraph_client.errors import InvalidArgument

    params: dict[str, Any] = {"debug": True}  # the debug trace carries the timings
    if args.top_k is not None:
        params["top_k"] = args.top_k
    if args.filter:
        try:
            params["filter"] = json.dumps(json.loads(args.filter))
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"--filter is not valid JSON: {exc}") from None
    if args.namespace is not None:
        params["namespace"] = args.namespace
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    return params


def ask_once(
    url: str,
    question: str,
    params: dict[str, Any],
    *,
    stream: bool = False,
    timeout: float = 120.0,
    out: TextIO | io.TextIOBase | None = None,
    connect: dict[str, Any] | None = None,
) -> Answer:
    """Ask the router; with ``stream``, each text delta is written to ``out`` (flushed) as it comes."""
    from ragraph_client.client import InferenceClient

    answer = Answer()
    with InferenceClient(url, timeout=timeout, **(connect or {})) as client:
        if not stream:
            reply = client.infer("rag", {"question": [question]}, params)
            outputs = {t.name: _text(t) for t in reply.outputs}
            answer.answer = outputs.get("answer", "")
            answer.sources = json.loads(outputs.get("sources") or "[]")
            _finish(answer, outputs, dict(reply.parameters))
            return answer
        parts: list[str] = []
        final_text = ""
        for message in client.stream("rag", {"question": [question]}, params, style="triton"):
            outputs = {t.name: _text(t) for t in message.outputs}
            if "sources" in outputs and "label" not in outputs:
                answer.sources = json.loads(outputs["sources"] or "[]")
            elif "answer" in outputs and "label" not in outputs:
                parts.append(outputs["answer"])
                if out is not None:
                    out.write(outputs["answer"])
                    out.flush()
            else:
                _finish(answer, outputs, dict(message.parameters))
                final_text = outputs.get("answer", "")
        answer.answer = "".join(parts)
        if not parts and final_text:  # nothing streamed (e.g. a refusal), the final message has it
            answer.answer = final_text
            if out is not None:
                out.write(final_text)
                out.flush()
    return answer


class _Echo(io.TextIOBase):
    """stdout for streamed deltas, remembering whether anything was written."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.used = False

    def write(self, text: str) -> int:
        self.used = self.used or bool(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def _ms(value: Any) -> str:
    return f"{float(value):.0f} ms" if value is not None else "-"


def render(answer: Answer) -> list[str]:
    """The sources, verdicts and timings as text lines."""
    lines = ["", "sources:" if answer.sources else "sources: none (nothing retrieved)"]
    for s in answer.sources:
        lines.append(f"  [{s.get('n')}] {s.get('doc_id')} #{s.get('chunk')}  score {float(s.get('score', 0)):.3f}")
    flagged = "  (some node failed or was skipped: see nodes)" if answer.parameters.get("flagged") else ""
    lines.append(f"label: {answer.label or '-'}   guard: {answer.guard or '-'}{flagged}")
    p = answer.parameters
    raw_debug = p.get("debug")
    debug: dict[str, Any] = raw_debug if isinstance(raw_debug, dict) else {}
    completion = int(p.get("completion_tokens", 0) or 0)
    rate = debug.get("tokens_per_s")
    if rate is None and completion:
        gen_ms = float(answer.nodes.get("generate", {}).get("ms", 0) or 0)
        rate = completion / (gen_ms / 1000) if gen_ms else None
    timing = [
        f"ttft {_ms(p.get('ttft_ms'))}" if p.get("ttft_ms") else "ttft -",
        f"{completion} tokens" + (f" ({p['finish_reason']})" if p.get("finish_reason") else ""),
        f"{float(rate):.1f} tokens/s" if rate else "- tokens/s",
        f"prompt {int(p.get('prompt_tokens', 0) or 0)} tokens",
    ]
    if debug.get("total_ms") is not None:
        timing.append(f"total {_ms(debug['total_ms'])}")
    lines.append("timings: " + " · ".join(timing))
    if answer.nodes:
        parts = []
        for name, node in answer.nodes.items():
            status = node.get("status", "?")
            note = "" if status == "ok" else f" [{status}{': ' + node['error'] if node.get('error') else ''}]"
            parts.append(f"{name} {float(node.get('ms', 0)):.0f}{note}")
        lines.append("nodes (ms): " + " · ".join(parts))
    return lines


def ask(args: argparse.Namespace) -> int:
    from ragraph_client.errors import RagraphError

    params = request_params(args)
    show = _Echo(sys.stdout) if args.stream and not args.json else None
    try:
        answer = ask_once(
            args.router_url,
            args.question,
            params,
            stream=args.stream,
            timeout=args.timeout,
            out=show,
            connect=client_kwargs(args),
        )
    except RagraphError:
        if show is not None and show.used:
            print(flush=True)  # end the partial answer's line before the error
        raise
    if args.json:
        print(json.dumps(answer.as_json(), ensure_ascii=False))
        return 0
    if answer.answer:
        print("" if args.stream else answer.answer)  # streamed: end the answer's line
    if not answer.answer:
        why = "the guard blocked the question" if answer.guard == "prompt_injection" else "the graph produced none"
        print(f"(no answer text: {why})")
    for line in render(answer):
        print(line)
    return 0


def add_command(commands: Any) -> None:
    p = commands.add_parser(
        "ask",
        help="ask the RAG graph a question (the router's 'rag' model)",
        description="Send a question to the router and print the answer, its sources, the answer label, "
        "the guard verdict and timings.",
    )
    p.add_argument("question")
    p.add_argument(
        "--router-url",
        default=os.environ.get(ROUTER_URL_ENV, "127.0.0.1:8301"),
        help=f"host:port of the router (default ${ROUTER_URL_ENV} or 127.0.0.1:8301)",
    )
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.add_argument(
        "--json", action="store_true", help="one JSON object: answer, sources, label, guard, parameters, nodes"
    )
    p.add_argument("--top-k", type=int, help="passages to retrieve (default: the graph's, 4)")
    p.add_argument("--filter", help='metadata filter, Pinecone syntax, e.g. \'{"doc_id": {"$eq": "retrieval.md"}}\'')
    p.add_argument("--namespace", help="store namespace to retrieve from")
    p.add_argument("--max-tokens", type=int, help="most tokens to generate (default: the llm service's, 128)")
    p.add_argument("--temperature", type=float, help="sampling temperature, 0 = greedy (default: the llm's, 1.0)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole request (default 120)")
    add_connection_args(p)
    p.set_defaults(func=ask)
