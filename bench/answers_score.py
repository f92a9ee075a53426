"""Scoring one answer of ``bench/answers.py``: does it state the expected fact, which sources does
it cite, does it refuse, does it loop.

Each QA row names its expected fact as a list of acceptable forms (``expect``): a plain string is
found case-insensitively in the answer after :func:`normalize` (whitespace collapsed, Markdown
backticks and emphasis removed); a string starting with ``re:`` is a regular expression searched
case-insensitively in the same normalized text. The answer states the fact when any form matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

REGEX_PREFIX = "re:"

_SPACE = re.compile(r"\s+")
_MARKUP = re.compile(r"[`*_]{1,3}(?=\S)|(?<=\S)[`*_]{1,3}")
# [1], [1, 2], [1][2], [1-3]; "Source 1" / "source [1]" are not citations of the kind asked for.
_CITATION = re.compile(r"\[\s*(\d{1,3}(?:\s*(?:,|-|\u2013)\s*\d{1,3})*)\s*\]")
_WORD = re.compile(r"\w+(?:['\u2019]\w+)?")

# Phrases that mean "I will not / cannot answer". Written to catch the small model's refusals and
# the "the sources do not say" answers the system prompt asks for, not negations inside a fact
# ("does not replace a present scheme" is an answer).
_REFUSALS = re.compile(
    r"|".join(
        (
            r"\bi (?:can ?not|can't|cannot|am unable to|am not able to|won't) (?:help|answer|assist|provide|find)",
            r"\bi'm (?:sorry|unable|not able)",
            r"\bi am sorry\b",
            r"\bi (?:do not|don't) (?:know|have (?:enough|any|the) information)",
            r"\b(?:the |these |provided |given )?(?:sources?|passages?|context|documents?|documentation) "
            r"(?:do|does|did) not (?:contain|mention|say|provide|include|specify|state|cover|answer)",
            r"\b(?:the |these |provided |given )?(?:sources?|passages?|context|documents?|documentation) "
            r"(?:don't|doesn't|didn't) (?:contain|mention|say|provide|include|specify|state|cover|answer)",
            r"\bthere (?:is|are) no (?:information|sources?|mention)\b",
            r"\b(?:is|are) not (?:mentioned|provided|specified|stated|given) in the (?:sources?|passages?|context)",
            r"\bno (?:relevant )?information (?:about|on|regarding)\b",
        )
    ),
    re.IGNORECASE,
)


def normalize(text: str) -> str:
    """Lower case, Markdown backticks/emphasis removed, whitespace runs collapsed to one space."""
    return _SPACE.sub(" ", _MARKUP.sub("", text)).strip().lower()


def states_fact(answer: str, expect: Sequence[str]) -> bool:
    """Whether ``answer`` holds any of the acceptable forms in ``expect`` (see the module doc)."""
    if not expect:
        raise ValueError("expect holds no acceptable form")
    text = normalize(answer)
    for form in expect:
        if form.startswith(REGEX_PREFIX):
            if re.search(form[len(REGEX_PREFIX) :], text, re.IGNORECASE):
                return True
        elif normalize(form) in text:
            return True
    return False


def cited(answer: str) -> list[int]:
    """Source numbers cited as ``[n]``, ``[n, m]``, ``[n][m]`` or ``[n-m]`` (a range cites each
    number in it, up to 20), each once, in the order first cited."""
    out: list[int] = []
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            bounds = [int(b) for b in re.split(r"\s*[-\u2013]\s*", part.strip())]
            numbers = (
                range(bounds[0], bounds[-1] + 1) if len(bounds) == 2 and 0 <= bounds[1] - bounds[0] < 20 else bounds
            )
            for n in numbers:
                if n not in out:
                    out.append(n)
    return out


def cites_holder(answer: str, holders: Iterable[int]) -> bool:
    """Whether the answer cites at least one of ``holders`` (the source numbers whose text holds
    the expected fact)."""
    wanted = set(holders)
    return any(n in wanted for n in cited(answer))


def is_refusal(answer: str) -> bool:
    """Whether the answer declines ("I can't help with that", "the sources do not mention ...")."""
    return bool(_REFUSALS.search(_SPACE.sub(" ", answer.replace("\u2019", "'"))))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeated_ngram_ratio(text: str, n: int = 4) -> float:
    """Share of the answer's word ``n``-grams that repeat an earlier one (0.0 = none repeats;
    0.0 as well when the answer has fewer than ``n`` words)."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@dataclass(frozen=True)
class LoopDetector:
    """An answer loops when more than ``threshold`` of its word ``n``-grams repeat an earlier one,
    counted once it has at least ``min_words`` words (a short answer may repeat a name twice).

    "The answer to your question is: The answer to your question is: ..." repeats nearly all of its
    4-grams; a plain answer of a few sentences repeats none or a handful, well under 0.2."""

    n: int = 4
    threshold: float = 0.2
    min_words: int = 12

    def ratio(self, text: str) -> float:
        return repeated_ngram_ratio(text, self.n)

    def loops(self, text: str) -> bool:
        return len(words(text)) >= self.min_words and self.ratio(text) > self.threshold


@dataclass(frozen=True)
class Score:
    """The verdicts on one answer."""

    states_fact: bool
    cites_holder: bool
    cites_any: bool
    refusal: bool
    looping: bool
    repeat_ratio: float


def score(answer: str, expect: Sequence[str], holders: Iterable[int], loop: LoopDetector | None = None) -> Score:
    detector = loop or LoopDetector()
    return Score(
        states_fact=states_fact(answer, expect),
        cites_holder=cites_holder(answer, holders),
        cites_any=bool(cited(answer)),
        refusal=is_refusal(answer),
        looping=detector.loops(answer),
        repeat_ratio=round(detector.ratio(answer), 4),
    )
