"""What the classifier sees of a text: its sentence embedding plus hashed lexical n-grams.

The embedding carries the topic; the n-grams carry the wording that topic-level similarity misses
("ignore case" vs "ignore your instructions", "your system prompt" vs "a system prompt"). Three
groups, each hashed into :data:`BUCKETS` slots, set to 1 where present and scaled to unit length:

- ``words``: lower-cased word unigrams and bigrams;
- ``chars``: 3-5 character n-grams inside each word (with word-boundary marks), which catch
  inflections, other languages and leetspeak;
- ``squashed``: 5-character n-grams of the text with everything but letters and digits removed,
  which catch spaced, dotted or hyphenated spelling ("i g n o r e", "I-G-N-O-R-E").

Text is NFKC-normalised first (full-width and look-alike compatibility characters fold to plain
ones). Hashing is CRC-32, so the features are the same in every process.
"""

from __future__ import annotations

import re
import unicodedata
import zlib

import numpy as np

BUCKETS = 4096
GROUPS = ("words", "chars", "squashed")
_WORD = re.compile(r"\w+")
_NOT_ALNUM = re.compile(r"[\W_]+")


def grams(text: str) -> tuple[list[str], list[str], list[str]]:
    """The n-grams of each group (prefixed by group, so groups never share a hash slot's meaning)."""
    folded = unicodedata.normalize("NFKC", text).lower()
    words = _WORD.findall(folded)
    word_grams = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    char_grams = []
    for word in words:
        marked = f"<{word}>"
        char_grams += [f"c:{marked[i : i + n]}" for n in (3, 4, 5) for i in range(len(marked) - n + 1)]
    squashed = _NOT_ALNUM.sub("", folded)
    squashed_grams = [f"s:{squashed[i : i + 5]}" for i in range(len(squashed) - 4)]
    return word_grams, char_grams, squashed_grams


def _hashed(batch: list[list[str]]) -> np.ndarray:
    out = np.zeros((len(batch), BUCKETS), dtype=np.float32)
    for row, items in enumerate(batch):
        for item in items:
            out[row, zlib.crc32(item.encode("utf-8")) % BUCKETS] = 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def lexical(texts: list[str]) -> np.ndarray:
    """[N, 3 * BUCKETS]: the three hashed groups side by side, each row of each group unit length
    (all zero for a text without letters or digits)."""
    per_text = [grams(text) for text in texts]
    return np.hstack([_hashed([g[k] for g in per_text]) for k in range(len(GROUPS))])


def features(unit_vectors: np.ndarray, texts: list[str]) -> np.ndarray:
    """[N, D + 3 * BUCKETS]: unit embeddings followed by :func:`lexical` of the same texts."""
    if len(texts) != unit_vectors.shape[0]:
        raise ValueError(f"{len(texts)} texts but {unit_vectors.shape[0]} embeddings")
    return np.hstack([unit_vectors.astype(np.float32, copy=False), lexical(texts)])
