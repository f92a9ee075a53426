"""Classifier quality on the held-out sets in tests/data/, the trained head beside the old
nearest-exemplar scoring, with the guard's threshold curve.

    python bench/classifier.py [--errors]

Runs in process with the encoder service's own code (the shipped all-MiniLM-L6-v2, packed
weights on CPU as the service loads it) and the shipped label sets. Prints:

- the guard on ``tests/data/query_guard_heldout.jsonl``: false positives on benign questions and
  injection recall at every threshold on ``score`` (the graph blocks when the label is
  ``prompt_injection`` and the score is at least the threshold), for the head and for the
  nearest-exemplar scoring it replaced (mean cosine of the 3 closest exemplars per label, softmax
  at temperature 0.05, same exemplars);
- the same curve from 5-fold cross-validation on the exemplars alone (what a threshold can be
  chosen from without the held-out set);
- the benign questions of ``bench/retrieval/questions.jsonl`` the guard would block;
- answer-label agreement on ``tests/data/answer_class_heldout.jsonl``, per hand label;
- the shipped graph's threshold, read from services/router/ragraph_router/graphs/rag.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "services" / "encoder"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragraph_encoder.classifier import LabelSet, read_exemplars  # noqa: E402
from ragraph_encoder.model import Encoder, normalize  # noqa: E402
from ragraph_encoder.settings import LABELSETS_DIR, EncoderSettings  # noqa: E402

DATA = REPO / "tests" / "data"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
INJECTION = "prompt_injection"


def rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shipped_threshold() -> float:
    text = (REPO / "services/router/ragraph_router/graphs/rag.yaml").read_text(encoding="utf-8")
    found = re.search(r"guard\.score: \{\$gte: ([0-9.]+)\}", text)
    return float(found.group(1)) if found else float("nan")


def nearest_exemplar_probs(train: np.ndarray, train_y: np.ndarray, n_labels: int, test: np.ndarray) -> np.ndarray:
    """The scoring the head replaced: mean similarity of the 3 closest exemplars, softmax at 0.05."""
    sims = test @ train.T
    per_label = np.stack([np.sort(sims[:, train_y == j], axis=1)[:, -3:].mean(axis=1) for j in range(n_labels)], axis=1)
    logits = per_label / 0.05
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def guard_counts(p_injection: np.ndarray, is_injection: np.ndarray, threshold: float) -> tuple[int, int]:
    """(benign blocked, injections blocked): blocked = label prompt_injection (p >= 0.5) and p >= threshold."""
    blocked = p_injection >= max(threshold, 0.5)
    return int(np.sum(blocked & ~is_injection)), int(np.sum(blocked & is_injection))


def curve(title: str, columns: dict[str, np.ndarray], is_injection: np.ndarray, shipped: float) -> None:
    benign, injections = int(np.sum(~is_injection)), int(np.sum(is_injection))
    print(f"\n{title} ({benign} benign, {injections} injections)")
    header = " | ".join(f"{name}: benign blocked | {name}: injections blocked" for name in columns)
    print(f"| threshold | {header} |")
    print("|---" * (1 + 2 * len(columns)) + "|")
    for threshold in sorted({*THRESHOLDS, shipped}):
        cells = []
        for p in columns.values():
            fp, tp = guard_counts(p, is_injection, threshold)
            cells += [f"{fp} ({fp / benign:.1%})", f"{tp} ({tp / injections:.1%})"]
        mark = " (shipped)" if threshold == shipped else ""
        print(f"| {threshold:g}{mark} | " + " | ".join(cells) + " |")


def cross_validated(pairs: list[tuple[str, str]], vectors: np.ndarray, folds: int = 5) -> np.ndarray:
    """Each exemplar's probabilities from a head trained on the other folds."""
    labels = sorted({label for _, label in pairs})
    out = np.zeros((len(pairs), len(labels)))
    fold = np.arange(len(pairs)) % folds
    for k in range(folds):
        train = [p for p, f in zip(pairs, fold, strict=True) if f != k]
        labelset = LabelSet.build("cv", train, vectors[fold != k])
        held = [p[0] for p, f in zip(pairs, fold, strict=True) if f == k]
        out[fold == k] = labelset.probabilities(vectors[fold == k], held)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", action="store_true", help="list every held-out text the head gets wrong")
    args = parser.parse_args()
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    encoder = Encoder(EncoderSettings(device="cpu"))

    def embed(texts: list[str]) -> np.ndarray:
        return normalize(
            np.stack([v for i in range(0, len(texts), 64) for v in encoder.encode_sync(texts[i : i + 64])])
        )

    shipped = shipped_threshold()
    results: dict[str, float] = {}
    for name in ("query_guard", "answer_class"):
        pairs = read_exemplars(LABELSETS_DIR / f"{name}.jsonl")
        train_vectors = embed([text for text, _ in pairs])
        start = time.perf_counter()
        labelset = LabelSet.build(name, pairs, train_vectors)
        built = time.perf_counter() - start
        held = rows(DATA / f"{name}_heldout.jsonl")
        texts = [r["text"] for r in held]
        vectors = embed(texts)
        start = time.perf_counter()
        probs = labelset.probabilities(vectors, texts)
        per_text_ms = (time.perf_counter() - start) / len(texts) * 1000
        counts = {label: sum(1 for _, lab in pairs if lab == label) for label in labelset.labels}
        print(
            f"\n## {name}: {len(pairs)} exemplars {counts}, head trained in {built:.2f} s, "
            f"{per_text_ms:.2f} ms/text for the head (embedding not counted)"
        )
        train_y = np.array([labelset.labels.index(label) for _, label in pairs])
        knn = nearest_exemplar_probs(train_vectors, train_y, len(labelset.labels), vectors)
        truth = np.array([labelset.labels.index(r["label"]) for r in held])
        predicted = probs.argmax(axis=1)
        results[f"{name} agreement"] = float(np.mean(predicted == truth))
        print(
            f"held-out agreement: head {np.mean(predicted == truth):.3f}, "
            f"nearest exemplars {np.mean(knn.argmax(axis=1) == truth):.3f} ({len(held)} texts)"
        )
        for j, label in enumerate(labelset.labels):
            mask = truth == j
            print(
                f"  {label}: head {np.sum(predicted[mask] == j)}/{mask.sum()}, "
                f"nearest exemplars {np.sum(knn.argmax(axis=1)[mask] == j)}/{mask.sum()}"
            )
        if name == "query_guard":
            inj = labelset.labels.index(INJECTION)
            is_injection = truth == inj
            curve("held-out guard curve", {"head": probs[:, inj], "nearest": knn[:, inj]}, is_injection, shipped)
            cv = cross_validated(pairs, train_vectors)
            curve("5-fold cross-validation on the exemplars (head)", {"head": cv[:, inj]}, train_y == inj, shipped)
            fp, tp = guard_counts(probs[:, inj], is_injection, shipped)
            results["guard false positives"] = fp / int(np.sum(~is_injection))
            results["injection recall"] = tp / int(np.sum(is_injection))
            questions = [r["question"] for r in rows(REPO / "bench" / "retrieval" / "questions.jsonl")]
            p_questions = labelset.probabilities(embed(questions), questions)[:, inj]
            blocked = [q for q, p in zip(questions, p_questions, strict=True) if p >= max(shipped, 0.5)]
            print(
                f"\nbench/retrieval questions (all benign) blocked at {shipped:g}: {len(blocked)} of {len(questions)}"
            )
            for q in blocked:
                print(f"  {q}")
        if args.errors:
            print("\nwrong on held-out:")
            for r, p in zip(held, probs, strict=True):
                if labelset.labels[int(p.argmax())] != r["label"]:
                    print(f"  {r['label']} -> {labelset.labels[int(p.argmax())]} {p.max():.2f}  {r['text'][:100]}")
    print(
        f"\nsummary at the shipped threshold {shipped:g}: "
        f"guard false positives {results['guard false positives']:.1%} (goal <= 2%), "
        f"injection recall {results['injection recall']:.1%} (goal >= 90%), "
        f"answer-label agreement {results['answer_class agreement']:.1%} (goal >= 90%)"
    )


if __name__ == "__main__":
    main()
