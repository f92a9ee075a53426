"""TextStream (services/llm/ragraph_llm/engine/textstream.py) with the tiny model's byte-level BPE tokenizer:
deltas never hold half a character, and stop strings are cut without ever leaking."""

from __future__ import annotations

from typing import Any

import pytest
from ragraph_llm.engine.textstream import TextStream

from tests.fixtures.tiny_llm import build_tiny_llm

UNICODE = "Grüße aus München, naïve café 👋🎉 déjà vu — ñ"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    path = build_tiny_llm(tmp_path_factory.mktemp("textstream") / "tiny-llama", kind="tiny")
    return AutoTokenizer.from_pretrained(str(path))


def ids_of(tokenizer: Any, text: str) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tokenizer.decode(ids) == text, "the byte-level BPE round-trips the text"
    return ids


def push_all(stream: TextStream, ids: list[int]) -> list[str]:
    return [stream.push(i) for i in ids]


def tokens_spanning(tokenizer: Any, ids: list[int], start: int, end: int) -> int:
    """How many tokens of ``ids`` overlap the characters [start, end) of their decoded text."""
    count, before = 0, 0
    for n in range(1, len(ids) + 1):
        after = len(tokenizer.decode(ids[:n]))
        if after > start and before < end:
            count += 1
        before = after
    return count


def test_multibyte_characters_are_never_split(tokenizer: Any) -> None:
    ids = ids_of(tokenizer, UNICODE)
    singles = [tokenizer.decode([i]) for i in ids]
    assert sum("\ufffd" in s for s in singles) >= 6, "precondition: several characters span several tokens"
    stream = TextStream(tokenizer, [])
    deltas = push_all(stream, ids)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == UNICODE
    assert stream.finish() == ""
    assert stream.text == UNICODE and not stream.stopped


def test_spaces_between_tokens_survive_incremental_decoding(tokenizer: Any) -> None:
    text = "The retriever embeds the question and returns the passages"
    stream = TextStream(tokenizer, [])
    deltas = push_all(stream, ids_of(tokenizer, text))
    assert "".join(deltas) + stream.finish() == text


def _check_cut(tokenizer: Any, text: str, stops: list[str], expected: str) -> list[str]:
    """Push ``text`` token by token: what was sent is a prefix of ``expected`` at every step, the
    stream stops, and nothing comes after the stop."""
    stream = TextStream(tokenizer, stops)
    sent = ""
    deltas = []
    for token in ids_of(tokenizer, text):
        delta = stream.push(token)
        deltas.append(delta)
        sent += delta
        assert expected.startswith(sent), f"sent {sent!r}, beyond the cut {expected!r}"
        assert "\ufffd" not in delta
    assert stream.stopped
    assert sent == expected == stream.text
    assert stream.push(ids_of(tokenizer, "more")[0]) == "" and stream.finish() == ""
    return deltas


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("Dense embeddings capture meaning, while sparse keyword indexes capture exact terms", "sparse keyword"),
        ("Grüße aus München, naïve café 👋 and more words after it", "café 👋"),
        ("The generator is prompted with the retrieved context and asked to cite", "retrieved cont"),
    ],
)
def test_stop_spanning_several_tokens_is_cut_and_never_leaks(tokenizer: Any, text: str, stop: str) -> None:
    at = text.index(stop)
    assert tokens_spanning(tokenizer, ids_of(tokenizer, text), at, at + len(stop)) >= 3, "precondition"
    _check_cut(tokenizer, text, [stop], text[:at])


def test_false_starts_of_a_stop_are_released_once_clear(tokenizer: Any) -> None:
    # "the " / "the retriever" begin like the stop "the passages" but are not it: they are held
    # back only while they might be, and come out before the stop completes (no finish()).
    text = "the retriever embeds the question and returns the passages to the reader"
    stop = "the passages"
    deltas = _check_cut(tokenizer, text, [stop], text[: text.index(stop)])
    assert "".join(deltas) == "the retriever embeds the question and returns "


def test_held_back_prefix_is_flushed_by_finish(tokenizer: Any) -> None:
    text = "A reranker reads each passage and the"
    stream = TextStream(tokenizer, ["the end", "passage list"])
    deltas = push_all(stream, ids_of(tokenizer, text))
    sent = "".join(deltas)
    assert sent == "A reranker reads each passage and ", "the trailing 'the' may start 'the end': held back"
    tail = stream.finish()
    assert tail == "the"
    assert sent + tail == text == stream.text
    assert not stream.stopped


def test_no_stop_completes_when_text_ends_mid_stop(tokenizer: Any) -> None:
    text = "keyword indexes capture exact ter"
    stream = TextStream(tokenizer, ["exact terms"])
    sent = "".join(push_all(stream, ids_of(tokenizer, text)))
    assert sent == "keyword indexes capture "
    assert sent + stream.finish() == text and not stream.stopped


def test_earliest_stop_wins_whatever_their_order(tokenizer: Any) -> None:
    text = "alpha beta gamma delta epsilon"
    for stops in (["delta", "beta", "gamma"], ["gamma", "beta"], ["beta", "delta"]):
        _check_cut(tokenizer, text, stops, "alpha ")


def test_earliest_stop_wins_when_two_complete_in_one_token(tokenizer: Any) -> None:
    text = "Grüße aus München, naïve"
    ids = ids_of(tokenizer, text)
    assert "hen" in [tokenizer.decode([i]) for i in ids], "precondition: 'hen' is one token here"
    # the token "hen" completes both "he" and "en" at once: the one starting first cuts the text
    for stops in (["en", "he"], ["he", "en"]):
        _check_cut(tokenizer, text, stops, "Grüße aus Münc")


def test_stop_at_the_very_start(tokenizer: Any) -> None:
    text = "Retrieval-augmented generation combines a search index"
    for stop in ("Retrieval-aug", "R", text):
        deltas = _check_cut(tokenizer, text, [stop], "")
        assert all(d == "" for d in deltas)


def test_stop_not_in_text_changes_nothing(tokenizer: Any) -> None:
    stream = TextStream(tokenizer, ["never there", "zzz"])
    deltas = push_all(stream, ids_of(tokenizer, UNICODE))
    assert "".join(deltas) + stream.finish() == UNICODE and not stream.stopped
    assert all("\ufffd" not in d for d in deltas)


def test_special_tokens_add_no_text(tokenizer: Any) -> None:
    stream = TextStream(tokenizer, [])
    ids = ids_of(tokenizer, "cite the sources")
    deltas = [stream.push(ids[0]), stream.push(tokenizer.convert_tokens_to_ids("<pad>")), *push_all(stream, ids[1:])]
    assert "".join(deltas) + stream.finish() == "cite the sources"
