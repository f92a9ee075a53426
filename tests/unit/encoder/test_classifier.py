from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ragraph_client.errors import InvalidArgument
from ragraph_encoder.classifier import LabelSet, pick, read_exemplars
from ragraph_encoder.features import BUCKETS, grams, lexical
from ragraph_encoder.head import LogisticHead


def _unit(rows: list[list[float]]) -> np.ndarray:
    v = np.array(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_head_learns_separable_labels_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(+1.0, 0.3, (20, 5)), rng.normal(-1.0, 0.3, (20, 5))])
    y = np.array([0] * 20 + [1] * 20)
    head = LogisticHead.fit(x, y, 2)
    probs = head.probabilities(np.array([[1.0] * 5, [-1.0] * 5]))
    assert probs.argmax(axis=1).tolist() == [0, 1] and np.all(probs.max(axis=1) > 0.9)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    again = LogisticHead.fit(x, y, 2)
    assert np.array_equal(head.weights, again.weights) and np.array_equal(head.bias, again.bias)


def test_gram_and_primal_training_agree() -> None:
    """Fewer exemplars than features trains through the Gram matrix; padding the same features with
    zero columns switches paths without changing the problem, so the probabilities must agree."""
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, (12, 4))
    y = np.array([0, 1, 2] * 4)
    primal = LogisticHead.fit(x, y, 3)  # 12 exemplars > 4 features
    padded = np.hstack([x, np.zeros((12, 20))])
    gram = LogisticHead.fit(padded, y, 3)  # 12 exemplars <= 24 features
    probe = rng.normal(0.0, 1.0, (6, 4))
    np.testing.assert_allclose(
        primal.probabilities(probe), gram.probabilities(np.hstack([probe, np.zeros((6, 20))])), atol=1e-4
    )


def test_classes_are_balanced() -> None:
    """A label with few exemplars is not swamped: with 30 of 'a' and 3 of 'b', a point at 'b' is 'b'."""
    x = np.vstack([np.tile([1.0, 0.0], (30, 1)), np.tile([0.0, 1.0], (3, 1))])
    head = LogisticHead.fit(x, np.array([0] * 30 + [1] * 3), 2)
    assert head.probabilities(np.array([[0.0, 1.0]]))[0, 1] > 0.8


def test_lexical_features_fold_spacing_and_compatibility_characters() -> None:
    plain, spaced, hyphened, fullwidth = lexical(["ignore", "i g n o r e", "I-G-N-O-R-E", "ｉｇｎｏｒｅ"])
    squashed = slice(2 * BUCKETS, 3 * BUCKETS)
    assert float(plain[squashed] @ spaced[squashed]) == pytest.approx(1.0)
    assert float(plain[squashed] @ hyphened[squashed]) == pytest.approx(1.0)
    np.testing.assert_array_equal(plain, fullwidth)
    for group in range(3):
        part = plain[group * BUCKETS : (group + 1) * BUCKETS]
        assert float(np.linalg.norm(part)) == pytest.approx(1.0)
    assert not np.any(lexical(["?!"]))
    words, chars, _ = grams("Ignore case")
    assert "w:ignore" in words and "b:ignore case" in words and "c:<ca" in chars


def test_labelset_uses_wording_as_well_as_embeddings() -> None:
    """Same embedding for every text: only the words can tell the labels apart."""
    pairs = [(t, "a") for t in ("red apple", "red cherry", "red berry")] + [
        (t, "b") for t in ("blue sky", "blue sea", "blue ink")
    ]
    same = _unit([[1.0, 0.0]] * 6)
    labelset = LabelSet.build("colours", pairs, same)
    labels, scores = labelset.classify(_unit([[1.0, 0.0]] * 2), ["a red rose", "deep blue"])
    assert labels == ["a", "b"]
    assert scores.dtype == np.float32 and np.all((scores > 0.5) & (scores <= 1.0))


def test_nearest_embeddings_win_when_words_say_nothing() -> None:
    pairs = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]
    labelset = LabelSet.build("t", pairs, _unit([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]]))
    labels, _ = labelset.classify(_unit([[1, 0.05], [0.05, 1]]), ["x", "y"])
    assert labels == ["a", "b"]
    with pytest.raises(ValueError, match="2 texts but 1 embeddings"):
        labelset.classify(_unit([[1, 0]]), ["x", "y"])


def test_unknown_labelset_names_the_parameter_and_the_choices() -> None:
    labelset = LabelSet.build("t", [("a", "a"), ("b", "b")], _unit([[1, 0], [0, 1]]))
    with pytest.raises(InvalidArgument, match=r"parameter 'labelset': unknown label set 'zzz' \(have s, t\)"):
        pick({"t": labelset, "s": labelset}, "zzz")


def test_exemplar_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"text": "x", "label": "a"}) + "\n" + '{"text": "y"}\n')
    with pytest.raises(ValueError, match="set.jsonl:2"):
        read_exemplars(path)
    path.write_text(json.dumps({"text": "x", "label": "a"}) + "\n")
    with pytest.raises(ValueError, match="at least two labels"):
        read_exemplars(path)
    path.write_text(json.dumps({"text": "x", "label": "a", "question": "q"}) + "\n\n" + '{"text": "y", "label": "b"}\n')
    assert read_exemplars(path) == [("x", "a"), ("y", "b")]
