"""ragraph_client.vectors.normalize: the encoder's and the local store's L2 normalisation (one
copy each before), bit for bit what each computed."""

from __future__ import annotations

import numpy as np
import pytest
from ragraph_client.vectors import normalize


def _rows(dtype: type[np.floating]) -> np.ndarray:
    rows = np.random.default_rng(7).normal(size=(6, 384)).astype(dtype)
    rows[2] = 0.0
    rows[4] *= 1e-6  # small, above the 1e-12 floor
    return rows


def test_unit_rows_and_zero_rows_stay_zero() -> None:
    rows = _rows(np.float32)
    out = normalize(rows)
    norms = np.linalg.norm(out, axis=1)
    assert np.allclose(np.delete(norms, 2), 1.0, atol=1e-6)
    assert not out[2].any()
    assert np.isfinite(out).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_dtype_is_kept_and_the_input_left_alone(dtype: type[np.floating]) -> None:
    rows = _rows(dtype)
    before = rows.copy()
    out = normalize(rows)
    assert out.dtype == dtype
    assert out is not rows
    assert np.array_equal(rows, before)


def test_same_values_as_the_two_copies_it_replaces() -> None:
    rows = _rows(np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    encoder = rows / np.maximum(norms, 1e-12)  # ragraph_encoder.model.normalize
    local = (rows / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)  # ragraph_retrieval.local
    assert np.array_equal(normalize(rows), encoder)
    assert np.array_equal(normalize(rows), local)
    assert normalize(rows).dtype == local.dtype
