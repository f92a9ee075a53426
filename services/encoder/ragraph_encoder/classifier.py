"""Embedding-based classification against labelled exemplars.

A label's score for a text is the mean cosine similarity of the text to that label's ``top_k``
closest exemplars; the best label wins, and its softmax share over all labels (temperature
``0.05``) is the reported score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ragraph_client.errors import InvalidArgument

TEMPERATURE = 0.05


def read_exemplars(path: Path) -> list[tuple[str, str]]:
    """JSON Lines of ``{"text": ..., "label": ...}``; blank lines ignored."""
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
    exemplars: np.ndarray  # [M, D], unit rows
    exemplar_labels: np.ndarray  # [M] index into labels
    top_k: int

    @classmethod
    def build(cls, name: str, pairs: list[tuple[str, str]], unit_vectors: np.ndarray, top_k: int) -> LabelSet:
        labels = sorted({label for _, label in pairs})
        index = np.array([labels.index(label) for _, label in pairs])
        return cls(name, labels, unit_vectors.astype(np.float32), index, top_k)

    def classify(self, unit_vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        sims = unit_vectors @ self.exemplars.T  # [N, M]
        per_label = np.empty((sims.shape[0], len(self.labels)), dtype=np.float32)
        for j in range(len(self.labels)):
            label_sims = sims[:, self.exemplar_labels == j]
            k = min(self.top_k, label_sims.shape[1])
            top = np.partition(label_sims, label_sims.shape[1] - k, axis=1)[:, -k:]
            per_label[:, j] = top.mean(axis=1)
        logits = per_label / TEMPERATURE
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return [self.labels[i] for i in best], probs[np.arange(len(best)), best].astype(np.float32)


def pick(labelsets: dict[str, LabelSet], name: str) -> LabelSet:
    if name not in labelsets:
        raise InvalidArgument(f"parameter 'labelset': unknown label set '{name}' (have {', '.join(sorted(labelsets))})")
    return labelsets[name]
