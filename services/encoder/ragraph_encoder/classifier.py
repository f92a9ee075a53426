"""Classification against labelled exemplars: a logistic head trained on them at load.

Each label set's exemplars are turned into features (the text's unit sentence embedding plus
hashed word, character and spacing-proof n-grams, :mod:`.features`) and a class-balanced
logistic-regression head is trained on them (:mod:`.head`; about a second for the shipped sets).
The best label wins; its probability under the head is the reported score, so a threshold on the
score is a threshold on that probability.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ragraph_client.errors import InvalidArgument

from .features import features
from .head import LogisticHead


def read_exemplars(path: Path) -> list[tuple[str, str]]:
    """JSON Lines of ``{"text": ..., "label": ...}`` (other fields ignored); blank lines ignored."""
    pairs: list[tuple[str, str]] = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["text"]), str(row["label"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{lineno}: expected a JSON object with 'text' and 'label' ({exc})") from None
    if len({label for _, label in pairs}) < 2:
        raise ValueError(f"{path}: a label set needs exemplars of at least two labels")
    return pairs


@dataclass
class LabelSet:
    name: str
    labels: list[str]
    head: LogisticHead

    @classmethod
    def build(cls, name: str, pairs: list[tuple[str, str]], unit_vectors: np.ndarray) -> LabelSet:
        """Train the head on ``pairs`` (text, label), whose unit embeddings are ``unit_vectors``."""
        labels = sorted({label for _, label in pairs})
        index = np.array([labels.index(label) for _, label in pairs])
        x = features(unit_vectors, [text for text, _ in pairs])
        return cls(name, labels, LogisticHead.fit(x, index, len(labels)))

    def probabilities(self, unit_vectors: np.ndarray, texts: list[str]) -> np.ndarray:
        """[N, len(labels)] probabilities of each label for each text."""
        return self.head.probabilities(features(unit_vectors, texts))

    def classify(self, unit_vectors: np.ndarray, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """The best label of each text and its probability (FP32)."""
        probs = self.probabilities(unit_vectors, texts)
        best = probs.argmax(axis=1)
        return [self.labels[i] for i in best], probs[np.arange(len(best)), best].astype(np.float32)


def pick(labelsets: dict[str, LabelSet], name: str) -> LabelSet:
    if name not in labelsets:
        raise InvalidArgument(f"parameter 'labelset': unknown label set '{name}' (have {', '.join(sorted(labelsets))})")
    return labelsets[name]
