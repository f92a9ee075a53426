"""Chunking: no chunk ever exceeds the encoder's limit in the encoder's own tokens (property
test over generated text), chunks tile the text in order, boundaries are preferred."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ragraph_client.errors import InvalidArgument
from ragraph_retrieval.chunking import Chunker
from ragraph_retrieval.tokens import HFTokenCounter, encoder_counter


@functools.cache
def _encoder() -> tuple[HFTokenCounter, int]:
    return encoder_counter()


@functools.cache
def _encoders_tokenizer() -> Any:
    """The tokenizer the encoder service loads (transformers', through sentence-transformers)."""
    from ragraph_encoder.bundled import resolve_model
    from ragraph_encoder.settings import DEFAULT_MODEL
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    tokenizer.model_max_length = 1 << 30
    return tokenizer


def _exact(counter: HFTokenCounter, text: str) -> int:
    """What the encoder itself will see: its own tokenizer with special tokens."""
    return len(_encoders_tokenizer()(text, add_special_tokens=True)["input_ids"])


WORDS = st.sampled_from(
    [
        "the",
        "encoder",
        "truncates",
        "silently",
        "naïve",
        "café",
        "数据库",
        "🙂",
        "x" * 40,
        "e=mc²",
        "don't",
        "foo_bar_baz",
        "12,345.67",
        "https://example.com/a/b?c=d",
        "λ",
        "—",
        "(",
        ")",
        "def",
        "return",
    ]
)
SEPS = st.sampled_from([" ", " ", " ", "\n", "\n\n", ". ", "! ", "\t", "  ", "\n# ", "\n- "])
TEXTS = st.lists(st.tuples(WORDS, SEPS), min_size=1, max_size=900).map(lambda xs: "".join(w + s for w, s in xs))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, kind=st.sampled_from(["markdown", "text", "code"]), size=st.sampled_from([24, 64, 192, 254]))
def test_no_chunk_over_the_encoder_limit(text: str, kind: str, size: int) -> None:
    counter, limit = _encoder()
    chunker = Chunker(counter, limit, chunk_tokens=size, overlap_tokens=size // 4)
    chunks = chunker.split(text, kind)
    for chunk in chunks:
        assert _exact(counter, chunk.text) <= limit + 2  # +2: [CLS] and [SEP]
        assert chunk.text == text[chunk.start : chunk.end]
        assert chunk.tokens == counter.count(chunk.text)
    # chunks are in order and cover every non-blank character
    covered = set()
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.start < b.start and a.end <= b.end
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_long_unbroken_run_is_cut_between_tokens() -> None:
    counter, limit = _encoder()
    # no whitespace at all, yet many word pieces (punctuation splits): only the token fallback
    # can cut it. (A letters-only run of >100 chars would be one [UNK] token for this tokenizer.)
    text = "ab,cd;ef." * 800
    chunks = Chunker(counter, limit, 192, 32).split(text, "text")
    assert len(chunks) > 5
    assert all(_exact(counter, c.text) <= limit + 2 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_prefers_paragraph_then_sentence_boundaries() -> None:
    counter, limit = _encoder()
    paragraphs = [" ".join(f"Sentence {p}.{s} talks about topic {p}." for s in range(6)) for p in range(6)]
    text = "\n\n".join(paragraphs)
    chunks = Chunker(counter, limit, chunk_tokens=60, overlap_tokens=0).split(text, "text")
    # every chunk ends at a sentence end, never mid-sentence
    assert all(c.text.endswith(".") for c in chunks)
    whole = Chunker(counter, limit, chunk_tokens=254, overlap_tokens=0).split(paragraphs[0], "text")
    assert len(whole) == 1 and whole[0].text == paragraphs[0]


def test_overlap_repeats_the_tail_of_the_previous_chunk() -> None:
    counter, limit = _encoder()
    text = " ".join(f"w{i}" for i in range(600))
    chunks = Chunker(counter, limit, chunk_tokens=50, overlap_tokens=10).split(text, "text")
    for a, b in zip(chunks, chunks[1:], strict=False):
        shared = text[b.start : a.end]
        assert 0 < counter.count(shared) <= 10
    no_overlap = Chunker(counter, limit, chunk_tokens=50, overlap_tokens=0).split(text, "text")
    assert all(a.end <= b.start for a, b in zip(no_overlap, no_overlap[1:], strict=False))


def test_markdown_splits_before_headings() -> None:
    counter, limit = _encoder()
    section = "## {t}\n\n" + "Some words about the section body. " * 12
    text = "\n".join(section.format(t=f"Title {i}") for i in range(5))
    chunks = Chunker(counter, limit, chunk_tokens=100, overlap_tokens=0).split(text, "markdown")
    assert all(c.text.startswith("## Title") for c in chunks)


def test_bad_settings() -> None:
    counter, limit = _encoder()
    with pytest.raises(InvalidArgument, match="chunk_tokens"):
        Chunker(counter, limit, chunk_tokens=limit + 1)
    with pytest.raises(InvalidArgument, match="overlap_tokens"):
        Chunker(counter, limit, chunk_tokens=64, overlap_tokens=60)
    with pytest.raises(InvalidArgument, match="kind"):
        Chunker(counter, limit).split("x", "pdf")
