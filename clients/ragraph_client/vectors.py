"""Embedding vectors: the one L2 normalisation the encoder (its ``normalize`` request parameter)
and the local vector store (cosine scores as dot products) both apply."""

from __future__ import annotations

import numpy as np

_FLOOR = 1e-12  # a zero row stays zero instead of dividing by zero


def normalize(rows: np.ndarray) -> np.ndarray:
    """Each row of a 2-D array scaled to unit L2 norm; an all-zero row stays all zero. A new array
    of the input's float dtype (float32 in, float32 out)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    result: np.ndarray = rows / np.maximum(norms, _FLOOR)
    return result


__all__ = ["normalize"]
