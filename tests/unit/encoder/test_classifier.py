from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ragraph_client.errors import InvalidArgument
from ragraph_encoder.classifier import LabelSet, pick, read_exemplars


def test_nearest_exemplars_win(tmp_path: Path) -> None:
    pairs = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labelset = LabelSet.build("t", pairs, vectors, top_k=2)
    labels, scores = labelset.classify(np.array([[1, 0.05], [0.05, 1]], dtype=np.float32))
    assert labels == ["a", "b"]
    assert np.all(scores > 0.9) and np.all(scores <= 1.0)
    with pytest.raises(InvalidArgument, match="parameter 'labelset': unknown label set 'zzz'"):
        pick({"t": labelset}, "zzz")


def test_exemplar_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"text": "x", "label": "a"}) + "\n" + '{"text": "y"}\n')
    with pytest.raises(ValueError, match="set.jsonl:2"):
        read_exemplars(path)
    path.write_text(json.dumps({"text": "x", "label": "a"}) + "\n")
    with pytest.raises(ValueError, match="at least two labels"):
        read_exemplars(path)
