"""The router's prompt builder, counted with the real encoder tokenizer: the budget holds exactly,
passages keep rank order and consecutive numbers, a passage is trimmed at a sentence (else word)
boundary or dropped, and citations are read back from an answer."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import pytest
from ragraph_client.errors import InvalidArgument
from ragraph_retrieval.store import Match
from ragraph_retrieval.tokens import HFTokenCounter, encoder_counter
from ragraph_router.prompt import (
    DEFAULT_SYSTEM,
    MESSAGE_OVERHEAD_TOKENS,
    NO_SOURCES,
    Prompt,
    PromptBuilder,
    Source,
    citations,
)

QUESTION = "Where does the encoder truncate long passages?"

SENTENCES = [
    "The encoder reads at most two hundred and fifty six tokens of every passage it embeds.",
    "Anything beyond that limit is silently cut off by the tokenizer before the model sees it.",
    "Chunking therefore counts tokens with the encoder's own tokenizer rather than with characters.",
    "Each chunk overlaps the previous one a little so that no sentence loses its context.",
    "The router later asks the language model to answer from the retrieved chunks alone.",
]
LONG_TEXT = " ".join(SENTENCES)


@functools.cache
def _counter() -> HFTokenCounter:
    return encoder_counter()[0]


def _match(doc: str, chunk: int, text: str, score: float = 0.5) -> Match:
    return Match(id=f"{doc}#{chunk}", score=score, metadata={"doc_id": doc, "chunk": chunk, "text": text})


def _matches(n: int = 5) -> list[Match]:
    return [_match(f"doc-{i}", i, LONG_TEXT, score=0.9 - i / 10) for i in range(n)]


def _recount(prompt: Prompt) -> int:
    """The budgeted size of a prompt, counted independently of the builder."""
    counter = _counter()
    return sum(counter.count(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in prompt.messages)


def _user(prompt: Prompt) -> str:
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    return prompt.messages[1]["content"]


def _bare_tokens(system: str | None = None, question: str = QUESTION) -> int:
    """What the system message and the question alone take (a prompt without sources)."""
    return PromptBuilder(_counter(), 100_000, system=system).build(question, []).tokens


def _sources_of(user: str) -> list[tuple[int, str, int]]:
    return [(int(n), doc, int(chunk)) for n, doc, chunk in re.findall(r"^\[(\d+)\] \((\S+) #(\d+)\)$", user, re.M)]


@pytest.mark.parametrize("extra", [0, 1, 5, 20, 40, 60, 100, 150, 250, 400, 10_000])
def test_budget_is_respected_exactly(extra: int) -> None:
    budget = _bare_tokens() + extra
    matches = _matches(5)
    prompt = PromptBuilder(_counter(), budget).build(QUESTION, matches)
    assert prompt.tokens == _recount(prompt)
    assert prompt.tokens <= budget
    user = _user(prompt)
    assert user.endswith(QUESTION)
    assert [s.n for s in prompt.sources] == list(range(1, len(prompt.sources) + 1))
    assert _sources_of(user) == [(s.n, s.doc_id, s.chunk) for s in prompt.sources]
    assert len(prompt.sources) + prompt.dropped == len(matches)
    assert prompt.trimmed <= 1
    for source in prompt.sources:
        assert LONG_TEXT.startswith(source.text)
        assert f"\n{source.text}\n" in user
    if extra == 10_000:
        assert (len(prompt.sources), prompt.dropped, prompt.trimmed) == (5, 0, 0)
    if extra <= 20:  # no room for min_passage_tokens of a passage after its header
        assert prompt.sources == [] and NO_SOURCES in user
    if 60 <= extra <= 400:
        assert prompt.sources and prompt.dropped > 0
        # what is left over is less than the next whole sentence would have needed
        assert budget - prompt.tokens < max(_counter().count(s) for s in SENTENCES) + 8


def test_rank_order_and_numbering() -> None:
    matches = [
        _match("gamma", 7, "Gamma passage text.", 0.91234567),
        _match("alpha", 0, "Alpha passage text.", 0.8),
        _match("beta", 3, "Beta passage text.", 0.7),
    ]
    prompt = PromptBuilder(_counter(), 1000).build(QUESTION, matches)
    assert [(s.n, s.doc_id, s.chunk) for s in prompt.sources] == [(1, "gamma", 7), (2, "alpha", 0), (3, "beta", 3)]
    assert _user(prompt) == (
        "Sources:\n\n"
        "[1] (gamma #7)\nGamma passage text.\n\n"
        "[2] (alpha #0)\nAlpha passage text.\n\n"
        "[3] (beta #3)\nBeta passage text.\n\n"
        f"Question: {QUESTION}"
    )
    assert prompt.messages[0] == {"role": "system", "content": DEFAULT_SYSTEM}
    assert prompt.sources[0].as_json() == {"n": 1, "doc_id": "gamma", "chunk": 7, "score": 0.9123}
    assert (prompt.dropped, prompt.trimmed) == (0, 0)


def test_default_system_prompt_asks_for_citations_and_honesty() -> None:
    assert "[1]" in DEFAULT_SYSTEM and "only" in DEFAULT_SYSTEM and "do not contain" in DEFAULT_SYSTEM


def test_trims_at_the_last_sentence_boundary_that_fits() -> None:
    counter = _counter()
    first = _match("first", 0, "A short first passage.")
    matches = [first, _match("second", 1, LONG_TEXT), _match("third", 2, LONG_TEXT)]
    builder_budget = 100_000
    whole = PromptBuilder(counter, builder_budget).build(QUESTION, matches[:1])
    # Room for the second header and its first two sentences, plus a few tokens of the third.
    keep = " ".join(SENTENCES[:2])
    probe = PromptBuilder(counter, builder_budget).build(QUESTION, [first, _match("second", 1, keep)])
    budget = probe.tokens + 4
    assert counter.count(SENTENCES[2]) > 6  # so the third sentence cannot fit

    prompt = PromptBuilder(counter, budget).build(QUESTION, matches)
    assert [s.doc_id for s in prompt.sources] == ["first", "second"]
    assert prompt.sources[1].text == keep
    assert (prompt.trimmed, prompt.dropped) == (1, 1)
    assert prompt.tokens == probe.tokens == _recount(prompt) <= budget
    assert prompt.tokens > whole.tokens


def test_trims_at_a_word_boundary_when_no_sentence_boundary_fits() -> None:
    counter = _counter()
    words = [f"word{i % 10}" for i in range(200)]  # no sentence punctuation at all
    text = " ".join(words)
    budget = _bare_tokens() + 90
    prompt = PromptBuilder(counter, budget).build(QUESTION, [_match("doc", 0, text)])
    assert prompt.trimmed == 1 and prompt.dropped == 0
    kept = prompt.sources[0].text
    assert text.startswith(kept) and text[len(kept)] == " "
    assert counter.count(kept) >= 24
    assert prompt.tokens == _recount(prompt) <= budget
    # the longest word prefix that fits: one more word would exceed the budget
    next_word = words[len(kept.split())]
    longer = _user(prompt).replace(kept, f"{kept} {next_word}")
    system_tokens = counter.count(prompt.messages[0]["content"])
    assert system_tokens + counter.count(longer) + 2 * MESSAGE_OVERHEAD_TOKENS > budget


def test_sentence_cut_with_too_few_tokens_falls_back_to_words() -> None:
    counter = _counter()
    text = "Short one. " + " ".join(f"filler{i % 7}" for i in range(150))
    prompt = PromptBuilder(counter, _bare_tokens() + 80).build(QUESTION, [_match("doc", 0, text)])
    kept = prompt.sources[0].text
    assert kept.startswith("Short one. filler0") and len(kept) > len("Short one.") + 30
    assert prompt.trimmed == 1


def test_drops_a_passage_when_less_than_min_tokens_fit() -> None:
    counter = _counter()
    first = _match("first", 0, "A short first passage.")
    matches = [first, _match("second", 1, LONG_TEXT), _match("third", 2, "Tiny.")]
    one = PromptBuilder(counter, 100_000).build(QUESTION, [first])
    # After the first passage there is room for the second's header and about ten tokens of text.
    budget = one.tokens + 20

    strict = PromptBuilder(counter, budget, min_passage_tokens=24).build(QUESTION, matches)
    assert [s.doc_id for s in strict.sources] == ["first"]
    assert (strict.dropped, strict.trimmed) == (2, 0)  # the third is dropped too, though it would fit
    assert _user(strict) == _user(one)
    assert strict.tokens == _recount(strict) <= budget

    lenient = PromptBuilder(counter, budget, min_passage_tokens=5).build(QUESTION, matches)
    assert [s.doc_id for s in lenient.sources] == ["first", "second"]
    assert (lenient.dropped, lenient.trimmed) == (1, 1)
    assert counter.count(lenient.sources[1].text) >= 5
    assert lenient.tokens == _recount(lenient) <= budget


def test_no_room_for_the_first_passage_gives_the_no_sources_prompt() -> None:
    budget = _bare_tokens() + 10
    prompt = PromptBuilder(_counter(), budget).build(QUESTION, _matches(3))
    assert prompt.sources == []
    assert (prompt.dropped, prompt.trimmed) == (3, 0)
    assert _user(prompt) == f"{NO_SOURCES}\n\nQuestion: {QUESTION}"


def test_duplicate_chunk_ids_are_skipped() -> None:
    a, b, c = _match("a", 0, "Text A."), _match("b", 1, "Text B."), _match("c", 2, "Text C.")
    prompt = PromptBuilder(_counter(), 1000).build(QUESTION, [a, b, a, b, c])
    assert [(s.n, s.doc_id) for s in prompt.sources] == [(1, "a"), (2, "b"), (3, "c")]
    assert _user(prompt).count("Text A.") == 1
    assert prompt.dropped == 0


def test_max_passages_limits_the_sources() -> None:
    prompt = PromptBuilder(_counter(), 100_000, max_passages=2).build(QUESTION, _matches(5))
    assert [s.doc_id for s in prompt.sources] == ["doc-0", "doc-1"]
    assert (prompt.dropped, prompt.trimmed) == (3, 0)


def test_no_matches() -> None:
    prompt = PromptBuilder(_counter(), 1000).build(QUESTION, [])
    assert _user(prompt) == f"{NO_SOURCES}\n\nQuestion: {QUESTION}"
    assert (prompt.sources, prompt.dropped, prompt.trimmed) == ([], 0, 0)
    assert prompt.tokens == _recount(prompt)
    # two messages, each charged its content plus the fixed overhead for role and delimiters
    contents = sum(_counter().count(m["content"]) for m in prompt.messages)
    assert MESSAGE_OVERHEAD_TOKENS > 0 and prompt.tokens == contents + 2 * MESSAGE_OVERHEAD_TOKENS


def test_question_too_long_is_invalid_argument_naming_question() -> None:
    question = "Why " + "really " * 300 + "?"
    need = _bare_tokens(question=question)
    PromptBuilder(_counter(), need).build(question, _matches(2))  # exactly enough: no error
    with pytest.raises(InvalidArgument) as info:
        PromptBuilder(_counter(), need - 1).build(question, _matches(2))
    message = str(info.value)
    assert "question" in message
    numbers = [int(x) for x in re.findall(r"\d+", message)]
    assert need in numbers and need - 1 in numbers


def test_custom_system_prompt() -> None:
    counter = _counter()
    system = "You are terse. Reply in one sentence and cite sources like [n]. " * 5
    matches = _matches(5)
    custom = PromptBuilder(counter, 400, system=system).build(QUESTION, matches)
    default = PromptBuilder(counter, 400).build(QUESTION, matches)
    assert custom.messages[0] == {"role": "system", "content": system}
    assert custom.tokens == _recount(custom) <= 400
    # the longer system message leaves less room for passages
    passage_tokens = [sum(counter.count(s.text) for s in p.sources) for p in (custom, default)]
    assert passage_tokens[0] < passage_tokens[1]


def test_deterministic() -> None:
    builder = PromptBuilder(_counter(), _bare_tokens() + 150)
    assert builder.build(QUESTION, _matches(4)) == builder.build(QUESTION, _matches(4))


class _CountingCounter:
    def __init__(self, inner: HFTokenCounter) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    def count(self, text: str) -> int:
        self.calls += 1
        return self.inner.count(text)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        self.calls += len(texts)
        return self.inner.count_many(texts)


def test_trimming_a_long_passage_counts_logarithmically() -> None:
    counter = _CountingCounter(_counter())
    text = " ".join(f"token{i % 50}" for i in range(20_000))
    prompt = PromptBuilder(counter, 300).build(QUESTION, [_match("big", 0, text)])
    assert prompt.trimmed == 1 and prompt.tokens <= 300
    assert counter.calls < 40


def test_citations() -> None:
    sources = [Source(n=i, doc_id=f"d{i}", chunk=0, score=0.5, text="t") for i in range(1, 5)]
    answer = "Per [2], yes [1, 3]; see also [3][4] and [9], [0], [2] again, [x] and [ 1 ]."
    assert citations(answer, sources) == [2, 1, 3, 4]
    assert citations("[4][2, 7] then [1]", sources) == [4, 2, 1]
    assert citations("no citations here", sources) == []
    assert citations("[1]", []) == []


# -- per-passage cap and the prompt node's parameters -------------------------------------------


def test_passage_tokens_cuts_each_passage_at_a_sentence_boundary() -> None:
    counter = _counter()
    limit = counter.count(" ".join(SENTENCES[:2])) + 2  # two sentences fit, three do not
    prompt = PromptBuilder(counter, 100_000, passage_tokens=limit).build(QUESTION, _matches(3))
    assert len(prompt.sources) == 3 and prompt.trimmed == 0 and prompt.dropped == 0
    for source in prompt.sources:
        assert source.text == " ".join(SENTENCES[:2])
        assert counter.count(source.text) <= limit
    uncapped = PromptBuilder(counter, 100_000).build(QUESTION, _matches(3))
    assert [s.text for s in uncapped.sources] == [LONG_TEXT] * 3
    assert prompt.tokens < uncapped.tokens


def test_passage_tokens_leaves_short_passages_whole() -> None:
    matches = [_match("short", 0, SENTENCES[0])]
    prompt = PromptBuilder(_counter(), 100_000, passage_tokens=200).build(QUESTION, matches)
    assert prompt.sources[0].text == SENTENCES[0]


def test_from_parameters_sets_every_argument() -> None:
    counter = _counter()
    params = {
        "budget_tokens": 900,
        "system": "Be brief.",
        "max_passages": 2,
        "passage_tokens": 60,
        "min_passage_tokens": 10,
    }
    builder = PromptBuilder.from_parameters(counter, params)
    assert (builder.budget_tokens, builder.system, builder.max_passages) == (900, "Be brief.", 2)
    assert (builder.passage_tokens, builder.min_passage_tokens) == (60, 10)
    prompt = builder.build(QUESTION, _matches(5))
    assert prompt.messages[0] == {"role": "system", "content": "Be brief."}
    assert len(prompt.sources) == 2 and prompt.dropped == 3
    assert all(counter.count(s.text) <= 60 for s in prompt.sources)
    default = PromptBuilder.from_parameters(counter, {})
    assert (default.budget_tokens, default.system, default.max_passages, default.passage_tokens) == (
        1536,
        DEFAULT_SYSTEM,
        8,
        None,
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"budget": 100}, "unknown prompt parameter 'budget'"),
        ({"budget_tokens": "900"}, "'budget_tokens' must be an integer"),
        ({"max_passages": 2.5}, "'max_passages' must be an integer"),
        ({"passage_tokens": True}, "'passage_tokens' must be an integer"),
        ({"system": 5}, "'system' must be a string"),
        ({"system": "  "}, "system must not be empty"),
        ({"budget_tokens": 0}, "budget_tokens must be positive"),
        ({"max_passages": -1}, "max_passages must not be negative"),
        ({"passage_tokens": 10}, "passage_tokens must be at least min_passage_tokens"),
    ],
)
def test_from_parameters_names_the_bad_parameter(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PromptBuilder.from_parameters(_counter(), params)


def test_best_last_lists_the_best_source_right_above_the_question() -> None:
    matches = [_match("gamma", 7, "Gamma passage text."), _match("alpha", 0, "Alpha passage text.")]
    prompt = PromptBuilder(_counter(), 1000, order="best_last").build(QUESTION, matches)
    assert [(s.n, s.doc_id) for s in prompt.sources] == [(1, "gamma"), (2, "alpha")]
    assert _user(prompt) == (
        "Sources:\n\n[2] (alpha #0)\nAlpha passage text.\n\n"
        f"[1] (gamma #7)\nGamma passage text.\n\nQuestion: {QUESTION}"
    )


@pytest.mark.parametrize("extra", [0, 60, 150, 400, 10_000])
def test_best_last_keeps_the_budget_and_the_same_passages(extra: int) -> None:
    budget = _bare_tokens() + extra
    first = PromptBuilder(_counter(), budget).build(QUESTION, _matches(5))
    last = PromptBuilder(_counter(), budget, order="best_last").build(QUESTION, _matches(5))
    assert last.tokens == _recount(last) <= budget
    assert [(s.n, s.doc_id, s.chunk, s.text) for s in last.sources] == [
        (s.n, s.doc_id, s.chunk, s.text) for s in first.sources
    ]
    assert _sources_of(_user(last)) == [(s.n, s.doc_id, s.chunk) for s in reversed(last.sources)]
    assert _user(last).endswith(QUESTION)


def test_order_must_be_known() -> None:
    with pytest.raises(ValueError, match="order must be one of best_first, best_last, got 'random'"):
        PromptBuilder.from_parameters(_counter(), {"order": "random"})
    assert PromptBuilder.from_parameters(_counter(), {"order": "best_last"}).best_last
