"""The scoring of bench/answers.py (bench/answers_score.py): fact matching, citation parsing,
refusal and loop detection, on answers of the kinds the bundled small model gives."""

from __future__ import annotations

import pytest

from bench.answers_score import (
    LoopDetector,
    cited,
    cites_holder,
    is_refusal,
    normalize,
    repeated_ngram_ratio,
    score,
    states_fact,
)

LOOP = (
    "The answer to your question is: The answer to your question is: The answer to your question is: "
    "The answer to your question is: The answer to your"
)
PARAGRAPH_LOOP = (
    "The verify parameter of requests.request is a boolean that can be set to True.\n\n"
    "The verify parameter of requests.request is a boolean that can be set to True.\n\n"
    "The verify parameter of"
)
PLAIN = (
    "Response.ok returns True when the status code is less than 400 [1]. It checks whether the status "
    "code is between 400 and 600, which would mean a client error or a server error [1]."
)


# -- fact matching ----------------------------------------------------------------------------


def test_normalize_drops_markup_case_and_extra_space() -> None:
    assert normalize("  Use `reset=False`\n\n in **click.style** ") == "use reset=false in click.style"


def test_plain_forms_match_case_and_markup_insensitively() -> None:
    assert states_fact("It raises an `HTTPError` [1].", ["httperror"])
    assert states_fact("The folder is ~/.config/foo-bar on Unix.", [".config/foo-bar"])
    assert states_fact("It is a **single chunk**.", ["one chunk", "single chunk"])
    assert not states_fact("It raises a ValueError.", ["httperror", "http error"])


def test_regex_forms() -> None:
    expect = ["re:connect.{0,40}read"]
    assert states_fact("A (connect timeout, read timeout) tuple.", expect)
    assert not states_fact("A read timeout, then a connect timeout.", expect)
    assert states_fact("It is False.", [r"re:\bfalse\b"])
    assert not states_fact("It is Falsey.", [r"re:\bfalse\b"])
    assert states_fact("No, it is not reentrant safe.", [r"re:^\W*no\b"])
    assert not states_fact("Not that I know.", [r"re:^\W*no\b"])


def test_an_empty_expectation_is_a_bug_in_the_qa_set() -> None:
    with pytest.raises(ValueError, match="no acceptable form"):
        states_fact("anything", [])


# -- citations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "numbers"),
    [
        ("It is False [1].", [1]),
        ("See [2][3] and again [2].", [2, 3]),
        ("Both [1, 3] say so.", [1, 3]),
        ("Sources [1-3] agree.", [1, 2, 3]),
        ("[ 4 ] with spaces", [4]),
        ("Source 1 says so, and (2) too.", []),
        ("A list [a] or a [1.5] version or [] is not a citation.", []),
    ],
)
def test_citations(answer: str, numbers: list[int]) -> None:
    assert cited(answer) == numbers


def test_cites_holder_needs_a_cited_number_that_holds_the_fact() -> None:
    assert cites_holder("It is False [2].", [2, 4])
    assert not cites_holder("It is False [1].", [2, 4])
    assert not cites_holder("It is False.", [1])
    assert not cites_holder("It is False [1].", [])


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "I can't help with that request.",
        "I can\u2019t help with that request.",
        "I cannot answer that from the sources.",
        "I'm sorry, but I don't have enough information.",
        "The sources do not mention the default capture strategy.",
        "The provided context doesn't say which RFC is used.",
        "There is no information about this in the sources.",
        "The default is not mentioned in the sources.",
    ],
)
def test_refusals(answer: str) -> None:
    assert is_refusal(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "No, it does not replace a scheme that is already present [1].",
        "It is not reentrant safe [2].",
        "The file is not held open until the first IO [1].",
        "click.pause does nothing when the program is not run through a terminal.",
        PLAIN,
    ],
)
def test_negative_answers_are_not_refusals(answer: str) -> None:
    assert not is_refusal(answer)


# -- loops ------------------------------------------------------------------------------------


def test_repeated_ngram_ratio() -> None:
    assert repeated_ngram_ratio("") == 0.0
    assert repeated_ngram_ratio("one two three") == 0.0  # fewer words than n
    assert repeated_ngram_ratio("a b c d e f g h") == 0.0
    assert repeated_ngram_ratio("a b c d a b c d") == pytest.approx(1 - 4 / 5)  # (abcd)(bcda)(cdab)(dabc) + abcd again
    assert repeated_ngram_ratio(LOOP) > 0.6


def test_loop_detector_flags_loops_and_not_plain_answers() -> None:
    detector = LoopDetector()
    assert detector.loops(LOOP)
    assert detector.loops(PARAGRAPH_LOOP)
    assert not detector.loops(PLAIN)
    assert not detector.loops("It is False, False.")  # too short to call a loop
    assert not detector.loops("Yes yes yes yes yes yes yes")  # 7 words: under min_words
    assert detector.loops(" ".join(["yes"] * 12))


def test_score_puts_the_verdicts_together() -> None:
    verdict = score(PLAIN, ["less than 400"], holders=[1])
    assert (verdict.states_fact, verdict.cites_holder, verdict.cites_any) == (True, True, True)
    assert (verdict.refusal, verdict.looping) == (False, False)
    assert 0.0 < verdict.repeat_ratio < 0.1  # "the status code is" twice
    looping = score(LOOP, ["less than 400"], holders=[1])
    assert not looping.states_fact and not looping.cites_any and looping.looping and looping.repeat_ratio > 0.6
    refused = score("I can't help with that request.", ["less than 400"], holders=[])
    assert refused.refusal and not refused.states_fact and not refused.cites_holder
