"""What one streamed ``rag`` request measured, and the load test's settings from the environment.

No locust import here (the unit tests use this module without locust installed).

Per request, measured by the client (``time.perf_counter``):

- **ttft_ms**: request started -> first ``answer`` delta received. ``None`` when the stream carried
  no delta (e.g. the guard refused the question: the final message holds the whole reply).
- **tokens_per_s**: the stream's rate after its first token, ``(completion_tokens - 1) /
  (last delta - first delta)``, with ``completion_tokens`` from the final message (the server's
  count: deltas may be coalesced for a slow reader, so counting messages would undercount).
  ``None`` below two tokens. The final message is not the end of generation (the router
  classifies the answer after it), so it is not used as the end time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_URL = "127.0.0.1:8301"
DEFAULT_QUESTIONS = REPO / "bench" / "retrieval" / "questions.jsonl"
MODEL = "rag"
STREAM_NAME = "rag stream"  # the locust entry name of the streams and of their metrics
LIMITED_NAME = "rag stream RESOURCE_EXHAUSTED"  # the entry of the calls refused by a rate limit
FALLBACK_QUESTIONS = (
    "Which services make up a ragraph deployment?",
    "How does the router stream an answer back to the client?",
    "What does the encoder service compute for a passage?",
    "How are documents split into chunks before they are embedded?",
)


class IncompleteStream(RuntimeError):
    """The router ended the stream without its final (``triton_final_response``) message."""


@dataclass(frozen=True)
class Settings:
    """``RAGRAPH_LOADTEST_*`` environment variables (and ``RAGRAPH_API_KEY``)."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    max_tokens: int = 48
    temperature: float | None = None
    timeout_s: float = 120.0
    wait_s: float = 0.0
    backoff_s: float = 1.0  # pause after a RESOURCE_EXHAUSTED (no hot loop against a rate limit)
    questions_file: Path | None = DEFAULT_QUESTIONS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        temperature = get("RAGRAPH_LOADTEST_TEMPERATURE")
        questions = get("RAGRAPH_LOADTEST_QUESTIONS")
        return cls(
            url=get("RAGRAPH_LOADTEST_URL") or DEFAULT_URL,
            api_key=get("RAGRAPH_API_KEY"),
            max_tokens=int(get("RAGRAPH_LOADTEST_MAX_TOKENS") or cls.max_tokens),
            temperature=None if temperature is None else float(temperature),
            timeout_s=float(get("RAGRAPH_LOADTEST_TIMEOUT") or cls.timeout_s),
            wait_s=float(get("RAGRAPH_LOADTEST_WAIT") or cls.wait_s),
            backoff_s=float(get("RAGRAPH_LOADTEST_BACKOFF") or cls.backoff_s),
            questions_file=Path(questions) if questions else DEFAULT_QUESTIONS,
        )

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        return params


def resource_exhausted(exc: BaseException) -> bool:
    """A rate limit (or another exhausted quota): gRPC status RESOURCE_EXHAUSTED."""
    code = getattr(exc, "code", None)
    return getattr(code, "name", None) == "RESOURCE_EXHAUSTED"


def load_questions(path: Path | None) -> list[str]:
    """Questions from a JSONL file (``{"question": ...}`` per line, as in bench/retrieval) or a plain
    text file (one per line); the built-in few when there is no such file or it holds none."""
    questions: list[str] = []
    if path is not None and path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                text = str(json.loads(line).get("question", "")).strip()
            else:
                text = line
            if text:
                questions.append(text)
    return questions or list(FALLBACK_QUESTIONS)


@dataclass
class StreamResult:
    total_ms: float
    ttft_ms: float | None
    tokens_per_s: float | None
    completion_tokens: int
    deltas: int
    answer_chars: int


def _names(message: Any) -> set[str]:
    return {t.name for t in message.outputs}


def measure_stream(
    messages: Iterable[Any], started: float, clock: Callable[[], float] = time.perf_counter
) -> StreamResult:
    """Consume one ``rag`` stream (``InferResponse`` messages, Triton style: sources, answer deltas,
    a final message with ``label``) and time it from ``started`` (a ``clock()`` reading taken
    before the call). Raises :class:`IncompleteStream` when no final message came."""
    first: float | None = None
    last: float | None = None
    deltas = 0
    chars = 0
    final: Any = None
    for message in messages:
        now = clock()
        names = _names(message)
        if "label" in names or message.parameters.get("triton_final_response"):
            final = message
            continue
        if "answer" in names:
            text = "".join(message.output("answer").as_strings())
            if not text:
                continue
            deltas += 1
            chars += len(text)
            if first is None:
                first = now
            last = now
    end = clock()
    if final is None:
        raise IncompleteStream(f"the stream ended after {deltas} deltas without its final message")
    tokens = int(final.parameters.get("completion_tokens", 0) or deltas)
    rate = None
    if first is not None and last is not None and tokens >= 2 and last > first:
        rate = (tokens - 1) / (last - first)
    return StreamResult(
        total_ms=(end - started) * 1e3,
        ttft_ms=None if first is None else (first - started) * 1e3,
        tokens_per_s=rate,
        completion_tokens=tokens,
        deltas=deltas,
        answer_chars=chars,
    )
