"""Token-aware chunking with overlap.

A text is cut into spans at the coarsest boundary that makes each span small enough (Markdown
headings, paragraphs, lines, sentences, words, and finally single tokens), then neighbouring
spans are packed into chunks of up to ``chunk_tokens`` tokens, each chunk starting with up to
``overlap_tokens`` tokens of the previous one. Every chunk is re-counted as a whole with the
encoder's tokenizer and never exceeds ``max_tokens``: the encoder would silently truncate it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragraph_client.errors import InvalidArgument

from .tokens import HFTokenCounter

_SENTENCE = r"(?<=[.!?;:])\s+"
SEPARATORS: dict[str, tuple[str, ...]] = {
    "markdown": (r"\n(?=#{1,6} )", r"\n\s*\n", r"\n", _SENTENCE, r"\s+"),
    "text": (r"\n\s*\n", r"\n", _SENTENCE, r"\s+"),
    "code": (r"\n\s*\n(?=\S)", r"\n\s*\n", r"\n", r"\s+"),
}


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    tokens: int


def _cut(text: str, start: int, end: int, pattern: str) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` after each match of ``pattern`` (separators stay with the piece
    before them, so the pieces tile the range exactly)."""
    pieces, at = [], start
    for match in re.finditer(pattern, text[start:end]):
        cut = start + match.end()
        if cut > at and cut < end:
            pieces.append((at, cut))
            at = cut
    pieces.append((at, end))
    return pieces


class Chunker:
    def __init__(
        self, counter: HFTokenCounter, max_tokens: int, chunk_tokens: int = 192, overlap_tokens: int = 32
    ) -> None:
        if max_tokens < 8:
            raise InvalidArgument(f"max_tokens={max_tokens}: the encoder limit is too small to chunk for")
        if not 0 < chunk_tokens <= max_tokens:
            raise InvalidArgument(f"chunk_tokens={chunk_tokens}: must be between 1 and the encoder limit {max_tokens}")
        if not 0 <= overlap_tokens < chunk_tokens // 2 + 1:
            raise InvalidArgument(f"overlap_tokens={overlap_tokens}: must be between 0 and half of chunk_tokens")
        self.counter = counter
        self.max_tokens = max_tokens
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens

    def describe(self) -> str:
        """What a chunk depends on besides the text (part of every chunk's content hash)."""
        return f"{self.counter.name}|{self.chunk_tokens}|{self.overlap_tokens}"

    # --- spans ---------------------------------------------------------------------------------

    def _spans(self, text: str, start: int, end: int, separators: Sequence[str]) -> list[_Span]:
        if not separators:
            return self._token_spans(text, start, end)
        pieces = _cut(text, start, end, separators[0])
        counts = self.counter.count_many([text[a:b] for a, b in pieces])
        out: list[_Span] = []
        for (a, b), n in zip(pieces, counts, strict=True):
            if n <= self.chunk_tokens:
                out.append(_Span(a, b, n))
            else:
                out.extend(self._spans(text, a, b, separators[1:]))
        return out

    def _token_spans(self, text: str, start: int, end: int) -> list[_Span]:
        """Last resort for a run with no whitespace (a hash, minified code): cut between tokens."""
        offsets = self.counter.offsets(text[start:end])
        step = max(1, self.chunk_tokens // 2)
        out = []
        for i in range(0, len(offsets), step):
            a = start if i == 0 else start + offsets[i][0]
            b = end if i + step >= len(offsets) else start + offsets[i + step][0]
            out.append(_Span(a, b, len(offsets[i : i + step])))
        return out

    # --- packing -------------------------------------------------------------------------------

    def split(self, text: str, kind: str = "text") -> list[Chunk]:
        if kind not in SEPARATORS:
            raise InvalidArgument(f"chunk kind {kind!r}: expected one of {sorted(SEPARATORS)}")
        spans = [s for s in self._spans(text, 0, len(text), SEPARATORS[kind]) if text[s.start : s.end].strip()]
        chunks: list[Chunk] = []
        i = 0
        while i < len(spans):
            j, total = i, 0
            while j < len(spans) and (j == i or total + spans[j].tokens <= self.chunk_tokens):
                total += spans[j].tokens
                j += 1
            j = self._fit(text, spans, i, j)
            body = text[spans[i].start : spans[j - 1].end]
            stripped = body.strip()
            lead = len(body) - len(body.lstrip())
            start = spans[i].start + lead
            chunks.append(Chunk(len(chunks), stripped, start, start + len(stripped), self.counter.count(stripped)))
            if j >= len(spans):
                break
            i = self._overlap_start(spans, i, j)
        return chunks

    def _fit(self, text: str, spans: list[_Span], i: int, j: int) -> int:
        """Shrink ``spans[i:j]`` until the whole chunk, counted exactly, is within max_tokens
        (token counts of pieces do not always add up exactly)."""
        while j - i > 1 and self.counter.count(text[spans[i].start : spans[j - 1].end].strip()) > self.max_tokens:
            j -= 1
        return j

    def _overlap_start(self, spans: list[_Span], i: int, j: int) -> int:
        """Where the next chunk starts: back from ``j`` by up to overlap_tokens, always > i."""
        k, carried = j, 0
        while k - 1 > i and carried + spans[k - 1].tokens <= self.overlap_tokens:
            k -= 1
            carried += spans[k].tokens
        return k
