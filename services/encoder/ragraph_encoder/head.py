"""A multinomial logistic-regression head, trained in a fixed number of deterministic steps.

Loss: class-balanced mean cross-entropy (every label weighs the same in total, however many
exemplars it has) plus ``l2 / 2 * |W|^2``. Training is Nesterov-accelerated gradient descent from
zero with the step size set from a bound on the loss's curvature, so the same exemplars always
give the same weights. When there are fewer exemplars than features the same iterates are
computed through the exemplars' Gram matrix (``W = X^T A``), which costs ``n^2`` per step instead
of ``n * features``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

L2 = 1e-3
STEPS = 1500


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return out


def _top_eigenvalue(x: np.ndarray, weights: np.ndarray, iterations: int = 50) -> float:
    """Largest eigenvalue of ``X^T diag(weights) X`` by power iteration from a fixed start."""
    v = np.ones(x.shape[1], dtype=np.float64) / np.sqrt(x.shape[1])
    value = 0.0
    for _ in range(iterations):
        w = x.T @ (weights * (x @ v))
        value = float(np.linalg.norm(w))
        if value == 0.0:
            return 0.0
        v = w / value
    return value


@dataclass
class LogisticHead:
    weights: np.ndarray  # [F, C]
    bias: np.ndarray  # [C]

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_labels: int, l2: float = L2, steps: int = STEPS) -> LogisticHead:
        """``x`` [n, F] features, ``y`` [n] label indices in ``range(n_labels)``."""
        n = x.shape[0]
        counts = np.bincount(y, minlength=n_labels).astype(np.float64)
        sample = (1.0 / (n_labels * counts))[y]  # sums to 1 over the present labels
        sample /= sample.sum()
        targets = np.eye(n_labels)[y]
        gram = n <= x.shape[1]
        if gram:  # logits = design @ params + bias
            design = (x.astype(np.float32, copy=False) @ x.T.astype(np.float32, copy=False)).astype(np.float64)
            root = np.sqrt(sample)
            top = float(np.linalg.eigvalsh(root[:, None] * design * root[None, :])[-1])
        else:
            design = x = x.astype(np.float64, copy=False)
            top = _top_eigenvalue(x, sample)
        # The softmax cross-entropy's Hessian is at most 0.5 * X^T S X; the bias adds 0.5.
        step = 1.0 / (0.5 * top + 0.5 + l2)
        params = np.zeros((design.shape[1], n_labels))
        bias = np.zeros(n_labels)
        prev_params, prev_bias = params, bias
        for t in range(1, steps + 1):
            momentum = (t - 1) / (t + 2)
            look_params = params + momentum * (params - prev_params)
            look_bias = bias + momentum * (bias - prev_bias)
            residual = (softmax(design @ look_params + look_bias) - targets) * sample[:, None]
            grad = residual if gram else x.T @ residual
            prev_params, prev_bias = params, bias
            params = look_params - step * (grad + l2 * look_params)
            bias = look_bias - step * residual.sum(axis=0)
        weights = x.T.astype(np.float64) @ params if gram else params
        return cls(weights.astype(np.float32), bias.astype(np.float32))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """[N, C] label probabilities for features ``x`` [N, F]."""
        return softmax(x.astype(np.float32, copy=False) @ self.weights + self.bias)
