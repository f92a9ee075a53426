"""Token counters: the encoder's tokenizer, tiktoken through a locally built encoding, and the
offline fallback with its one warning."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry
from ragraph_retrieval import tokens
from ragraph_retrieval.tokens import TiktokenCounter, encoder_counter, prompt_counter

PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MERGES = [b"th", b"the", b" the", b"in", b"ing", b" a", b"er", b" en", b"cod", b"code", b" code"]


def _write_bpe(path: Path) -> Path:
    """A small byte-level BPE in tiktoken's file format: every byte, then a few merges."""
    ranks = [bytes([b]) for b in range(256)] + MERGES
    path.write_text("".join(f"{base64.b64encode(tok).decode()} {rank}\n" for rank, tok in enumerate(ranks)))
    return path


def _local_encoding(path: Path) -> tiktoken.Encoding:
    return tiktoken.Encoding(
        name="ragraph-test-bpe",
        pat_str=PATTERN,
        mergeable_ranks=tiktoken.load.load_tiktoken_bpe(str(path)),
        special_tokens={},
    )


def test_tiktoken_counter_counts_with_the_encoding(tmp_path: Path) -> None:
    enc = _local_encoding(_write_bpe(tmp_path / "test.tiktoken"))
    counter = TiktokenCounter(enc)
    assert counter.name == "tiktoken:ragraph-test-bpe"
    # " the" and " code" are single merged tokens; "zq" has no merge: 2 byte tokens
    assert counter.count(" the code") == 2
    assert counter.count("zq") == 2
    assert counter.count_many(["the", "the zq", ""]) == [1, 4, 0]  # " zq": three byte tokens


def test_encoder_counter_is_the_encoders_tokenizer() -> None:
    counter, limit = encoder_counter()
    assert limit == 254  # all-MiniLM-L6-v2: max_seq_length 256 minus [CLS] and [SEP]
    assert counter.count("hello world") == 2
    pieces = counter.tokenizer.encode("unbelievably", add_special_tokens=False).tokens
    assert len(pieces) > 1
    assert counter.count_many(["hello", "unbelievably"]) == [1, len(pieces)]
    text = "hello unbelievably"
    assert [text[a:b] for a, b in counter.offsets(text)] == ["hello", *[p.removeprefix("##") for p in pieces]]


def test_prompt_counter_falls_back_offline_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fallback, _ = encoder_counter()
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setattr(tokens, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="ragraph.tokens"):
        assert prompt_counter("cl100k_base", fallback) is fallback
        assert prompt_counter("cl100k_base", fallback) is fallback
    warnings = [r for r in caplog.records if r.name == "ragraph.tokens"]
    assert len(warnings) == 1
    assert "TIKTOKEN_CACHE_DIR is not set" in warnings[0].getMessage()
    assert prompt_counter(None, fallback) is fallback


def test_prompt_counter_loads_from_the_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An encoding registered the way tiktoken plugins register theirs, whose file lives in
    TIKTOKEN_CACHE_DIR, is used; a name that cannot load there falls back, naming why."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    bpe = _write_bpe(cache / "ragraph-test.tiktoken")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(tokens, "_warned", set())
    tiktoken.registry._find_constructors()
    assert tiktoken.registry.ENCODING_CONSTRUCTORS is not None
    monkeypatch.setitem(
        tiktoken.registry.ENCODING_CONSTRUCTORS,
        "ragraph-test-bpe",
        lambda: {
            "name": "ragraph-test-bpe",
            "pat_str": PATTERN,
            "mergeable_ranks": tiktoken.load.load_tiktoken_bpe(str(bpe)),
            "special_tokens": {},
        },
    )
    fallback, _ = encoder_counter()
    counter = prompt_counter("ragraph-test-bpe", fallback)
    assert isinstance(counter, TiktokenCounter)
    assert counter.count(" the code") == 2
    with caplog.at_level(logging.WARNING, logger="ragraph.tokens"):
        assert prompt_counter("no-such-encoding", fallback) is fallback
    assert "Unknown encoding" in caplog.text


def test_prompt_counter_never_downloads_a_missing_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An image built without the tiktoken file (empty TIKTOKEN_CACHE_DIR): no fetch is attempted,
    the fallback counts at once and the warning names the cache dir and the URL not fetched."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens, "_warned", set())
    fetched: list[str] = []

    def fetch(blobpath: str) -> bytes:
        fetched.append(blobpath)
        raise AssertionError("tiktoken tried to download")

    monkeypatch.setattr(tiktoken.load, "read_file", fetch)
    fallback, _ = encoder_counter()
    with caplog.at_level(logging.WARNING, logger="ragraph.tokens"):
        assert prompt_counter("cl100k_base", fallback) is fallback
    assert fetched == []
    assert tiktoken.load.read_file is fetch  # the guard is undone
    assert f"not in TIKTOKEN_CACHE_DIR={tmp_path}" in caplog.text
    assert "cl100k_base.tiktoken" in caplog.text
