"""The LLM prompt the router builds from a question and its retrieved passages.

The prompt is two chat messages, as the LLM service's ``messages`` input takes them: a system
message (the instruction to answer from the numbered sources only and cite them as ``[n]``) and a
user message (the numbered sources, then the question).

The token budget is an estimate in the router's :class:`~ragraph_retrieval.tokens.TokenCounter`
(the LLM service enforces the model's exact window itself): every message's content is counted
with the counter, plus :data:`MESSAGE_OVERHEAD_TOKENS` per message for the role and the chat
template's delimiters. Every candidate prompt is counted as a whole before it is accepted, so the
estimate is exact for the counter even when tokens do not add up across joined pieces.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragraph_client.errors import InvalidArgument
from ragraph_retrieval.store import Match
from ragraph_retrieval.tokens import TokenCounter

# Tokens added per message on top of its content: the role and the template's start/end markers
# (ChatML-style templates spend about this: "<|im_start|>", the role, a newline, "<|im_end|>").
MESSAGE_OVERHEAD_TOKENS = 4

DEFAULT_SYSTEM = (
    "Answer the user's question using only the numbered sources given with it. "
    "Each time you use a source, cite it inline by its number in square brackets, such as [1] or [2][3]. "
    "If the sources do not contain the answer, say that they do not, rather than answering from memory."
)
NO_SOURCES = "There are no sources for this question."
SOURCES_HEADING = "Sources:"
QUESTION_LABEL = "Question:"

# Where a passage may be cut: after a sentence's closing punctuation (and any closing quotes or
# brackets) followed by whitespace, or before a line break; failing that, after any word.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)|(?=\n)")
_WORD = re.compile(r"\S+")
_CITATION = re.compile(r"\[\s*(\d{1,6}(?:\s*,\s*\d{1,6})*)\s*\]")


@dataclass(frozen=True)
class Source:
    """A passage as it appears in the prompt: ``[n]``, its document and chunk, its score, and the
    text placed in the prompt (shortened when it was trimmed)."""

    n: int
    doc_id: str
    chunk: int
    score: float
    text: str

    def as_json(self) -> dict[str, Any]:
        return {"n": self.n, "doc_id": self.doc_id, "chunk": self.chunk, "score": round(self.score, 4)}


@dataclass(frozen=True)
class Prompt:
    """``messages`` for the LLM; ``sources`` numbered 1..n in rank order; ``tokens`` the budgeted
    size (contents plus per-message overhead); ``dropped`` the distinct passages left out
    entirely (over the budget or past ``max_passages``); ``trimmed`` those shortened to fit."""

    messages: list[dict[str, str]]
    sources: list[Source]
    tokens: int
    dropped: int
    trimmed: int


@dataclass(frozen=True)
class _Candidate:
    doc_id: str
    chunk: int
    score: float
    text: str


def _header(n: int, doc_id: str, chunk: int) -> str:
    return f"[{n}] ({doc_id} #{chunk})" if chunk >= 0 else f"[{n}] ({doc_id})"


def _candidates(matches: Sequence[Match]) -> list[_Candidate]:
    """Matches in rank order, without repeated chunk ids or passages that have no text."""
    seen: set[str] = set()
    out: list[_Candidate] = []
    for match in matches:
        if match.id in seen:
            continue
        seen.add(match.id)
        meta = match.metadata or {}
        text = meta.get("text")
        if not isinstance(text, str) or not text.strip():
            continue
        doc_id = meta.get("doc_id")
        chunk = meta.get("chunk")
        out.append(
            _Candidate(
                doc_id=doc_id if isinstance(doc_id, str) and doc_id else match.id,
                chunk=chunk if isinstance(chunk, int) and not isinstance(chunk, bool) else -1,
                score=float(match.score),
                text=text.strip(),
            )
        )
    return out


# The prompt node's parameters (graph yaml) and the PromptBuilder arguments they set.
PARAMETERS = ("budget_tokens", "system", "max_passages", "passage_tokens", "min_passage_tokens", "order")
ORDERS = ("best_first", "best_last")


class PromptBuilder:
    """Builds prompts within ``budget_tokens`` (see the module docstring for how they count).

    The system message and the question always go in; passages follow in rank order until the
    budget is spent. A passage longer than ``passage_tokens`` (when set) is first cut to that
    many tokens at its last sentence boundary (word boundary when no sentence boundary keeps
    ``min_passage_tokens``). A passage that does not fit whole is cut the same way to what fits,
    and is left out with every later passage when fewer than ``min_passage_tokens`` of it fit.
    Numbers follow the rank ([1] is the best match); ``order="best_last"`` lists the sources from
    the last-ranked to [1], so the best passage sits right above the question (small models
    attend most to the end of the prompt).
    """

    def __init__(
        self,
        counter: TokenCounter,
        budget_tokens: int,
        system: str | None = None,
        min_passage_tokens: int = 24,
        max_passages: int = 8,
        passage_tokens: int | None = None,
        order: str = "best_first",
    ) -> None:
        if budget_tokens < 1:
            raise ValueError(f"budget_tokens must be positive, got {budget_tokens}")
        if min_passage_tokens < 1:
            raise ValueError(f"min_passage_tokens must be positive, got {min_passage_tokens}")
        if max_passages < 0:
            raise ValueError(f"max_passages must not be negative, got {max_passages}")
        if passage_tokens is not None and passage_tokens < min_passage_tokens:
            raise ValueError(
                f"passage_tokens must be at least min_passage_tokens ({min_passage_tokens}), got {passage_tokens}"
            )
        if system is not None and not system.strip():
            raise ValueError("system must not be empty")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        self.counter = counter
        self.budget_tokens = budget_tokens
        self.system = DEFAULT_SYSTEM if system is None else system
        self.min_passage_tokens = min_passage_tokens
        self.max_passages = max_passages
        self.passage_tokens = passage_tokens
        self.best_last = order == "best_last"
        self._system_tokens = counter.count(self.system) + MESSAGE_OVERHEAD_TOKENS

    @classmethod
    def from_parameters(cls, counter: TokenCounter, parameters: Mapping[str, Any]) -> PromptBuilder:
        """A builder from a prompt node's ``parameters`` (:data:`PARAMETERS`; ``budget_tokens``
        defaults to 1536). ValueError names the parameter that is unknown or wrong."""
        unknown = sorted(set(parameters) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"unknown prompt parameter {unknown[0]!r} (known: {', '.join(PARAMETERS)})")
        ints: dict[str, int | None] = {}
        for name in ("budget_tokens", "max_passages", "passage_tokens", "min_passage_tokens"):
            value = parameters.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"prompt parameter {name!r} must be an integer, got {value!r}")
            ints[name] = value
        system, order = parameters.get("system"), parameters.get("order", "best_first")
        if system is not None and not isinstance(system, str):
            raise ValueError(f"prompt parameter 'system' must be a string, got {system!r}")
        if not isinstance(order, str):
            raise ValueError(f"prompt parameter 'order' must be a string, got {order!r}")
        return cls(
            counter,
            ints["budget_tokens"] if ints["budget_tokens"] is not None else 1536,
            system=system,
            min_passage_tokens=ints["min_passage_tokens"] or 24,
            max_passages=ints["max_passages"] if ints["max_passages"] is not None else 8,
            passage_tokens=ints["passage_tokens"],
            order=order,
        )

    def build(self, question: str, matches: Sequence[Match]) -> Prompt:
        question = question.strip()
        if not question:
            raise InvalidArgument("question is empty")
        fixed = self._system_tokens + MESSAGE_OVERHEAD_TOKENS  # system message + user overhead
        suffix = f"\n\n{QUESTION_LABEL} {question}"
        bare = NO_SOURCES + suffix
        bare_tokens = fixed + self.counter.count(bare)
        if bare_tokens > self.budget_tokens:
            raise InvalidArgument(
                f"question: the system prompt and question take {bare_tokens} tokens ({self.counter.name}), "
                f"over the prompt budget of {self.budget_tokens} tokens"
            )

        candidates = _candidates(matches)
        sources: list[Source] = []
        user, tokens, trimmed = bare, bare_tokens, 0
        blocks: list[str] = []  # the accepted sources so far, "[n] (doc #chunk)\ntext", in rank order
        for cand in candidates[: self.max_passages]:
            n = len(sources) + 1
            header = _header(n, cand.doc_id, cand.chunk) + "\n"
            if self.best_last:  # a lower-ranked passage goes above the ones already placed
                lead = f"{SOURCES_HEADING}\n\n{header}"
                tail = "".join("\n\n" + b for b in reversed(blocks)) + suffix
            else:
                lead = SOURCES_HEADING + "\n\n" + "".join(b + "\n\n" for b in blocks) + header
                tail = suffix
            text = self._cap(cand.text)
            whole = self._total(fixed, lead + text + tail)
            cut = whole > self.budget_tokens
            if cut:
                shorter = self._trim(text, lead, tail, fixed)
                if shorter is None:
                    break
                text, whole = shorter, self._total(fixed, lead + shorter + tail)
                trimmed += 1
            user, tokens = lead + text + tail, whole
            sources.append(Source(n=n, doc_id=cand.doc_id, chunk=cand.chunk, score=cand.score, text=text))
            if cut:
                break  # the budget is spent
            blocks.append(header + text)
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": user}]
        return Prompt(
            messages=messages,
            sources=sources,
            tokens=tokens,
            dropped=len(candidates) - len(sources),
            trimmed=trimmed,
        )

    def _cap(self, text: str) -> str:
        """``text`` cut to ``passage_tokens`` at a sentence (else word) boundary, when longer."""
        limit = self.passage_tokens
        if limit is None or self.counter.count(text) <= limit:
            return text
        return self._cut(text, lambda prefix: self.counter.count(prefix) <= limit) or text

    def _total(self, fixed: int, user: str) -> int:
        return fixed + self.counter.count(user)

    def _trim(self, text: str, before: str, after: str, fixed: int) -> str | None:
        """The longest prefix of ``text`` ending at a sentence boundary that fits (placed between
        ``before`` and ``after`` in the user message), if it holds ``min_passage_tokens``; else the
        longest fitting prefix ending at a word boundary, if it holds that many; else None. Binary
        searches over the boundaries, counting the user message once per probe."""

        def fits(prefix: str) -> bool:
            return self._total(fixed, before + prefix + after) <= self.budget_tokens

        return self._cut(text, fits)

    def _cut(self, text: str, fits: Callable[[str], bool]) -> str | None:
        """The longest prefix of ``text`` that ``fits``, ending at a sentence boundary when that
        keeps ``min_passage_tokens``, else at a word boundary; None when neither keeps that many."""
        sentence_cuts = sorted({m.end() for m in _SENTENCE_END.finditer(text) if 0 < m.end() < len(text)})
        at = _longest(text, sentence_cuts, fits)
        if at and self.counter.count(text[:at].rstrip()) >= self.min_passage_tokens:
            return text[:at].rstrip()
        # Every word is at least one token, so a prefix of more words than the budget never fits.
        word_cuts = [m.end() for m in _WORD.finditer(text) if m.end() < len(text)][: self.budget_tokens]
        word_cuts = word_cuts[bisect.bisect_right(word_cuts, at) :]
        at = _longest(text, word_cuts, fits) or at
        if at and self.counter.count(text[:at].rstrip()) >= self.min_passage_tokens:
            return text[:at].rstrip()
        return None


def _longest(text: str, cuts: list[int], fits: Callable[[str], bool]) -> int:
    """The largest offset in ``cuts`` (ascending) whose prefix fits, found by binary search
    (prefix sizes grow with the offset); 0 when none that was tried fits. Only offsets checked
    with ``fits`` are returned."""
    lo, hi, best = 0, len(cuts) - 1, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        prefix = text[: cuts[mid]].rstrip()
        if prefix and fits(prefix):
            best, lo = cuts[mid], mid + 1
        else:
            hi = mid - 1
    return best


def citations(answer: str, sources: Sequence[Source]) -> list[int]:
    """The source numbers an answer cites as ``[n]``, ``[n, m]`` or ``[n][m]``: only numbers of
    ``sources``, each once, in the order first cited."""
    known = {s.n for s in sources}
    out: list[int] = []
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            n = int(part)
            if n in known and n not in out:
                out.append(n)
    return out
