"""Held-out probe quality: cross-validated predictions and classification metrics.

The folds are shared by all tasks and respect the group column (no patient on both sides);
each fold is one more row of sample weights for the batched probe engine.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import GroupKFold, KFold


def fold_ids(n: int, n_folds: int, groups: np.ndarray | None, seed: int) -> np.ndarray:
    """``(N,)`` fold index per row; whole groups stay in one fold when ``groups`` is given."""
    out = np.empty(n, np.int64)
    x = np.zeros((n, 1))
    if groups is None:
        splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x)
    else:
        n_groups = len(np.unique(groups))
        splitter = GroupKFold(n_splits=min(n_folds, n_groups), shuffle=True, random_state=seed).split(x, groups=groups)
    for f, (_, test) in enumerate(splitter):
        out[test] = f
    return out


def fold_weights(folds: np.ndarray) -> np.ndarray:
    """``(F, N)`` training weights: 1 outside fold f, 0 inside."""
    return (folds[None, :] != np.arange(folds.max() + 1)[:, None]).astype(np.float32)


def predict_proba(x: np.ndarray, coef: np.ndarray, intercept: np.ndarray, class_mask: np.ndarray) -> np.ndarray:
    """Softmax probabilities ``(N, K)`` of one probe (rotated basis), padded classes 0."""
    z = x @ coef.T + intercept
    z = np.where(class_mask[None], z, -np.inf)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def classification_metrics(y: np.ndarray, proba: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, macro F1, macro one-vs-rest AUROC and chance levels.

    Args:
      y: ``(n,)`` int labels in ``[0, C)``.  proba: ``(n, C)`` probabilities.
    Returns:
      dict; ``chance`` is the majority-class rate (the accuracy of always guessing it); balanced
      accuracy and AUROC have chance ``1/C`` and ``0.5``.
    """
    c = proba.shape[1]
    pred = proba.argmax(1)
    counts = np.bincount(y, minlength=c)
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, average="macro", labels=np.arange(c), zero_division=0)),
        "chance": float(counts.max() / counts.sum()),
        "n_eval": int(len(y)),
    }
    present = np.flatnonzero(counts > 0)
    try:
        if c == 2:
            out["auroc"] = float(roc_auc_score(y, proba[:, 1]))
        elif len(present) == c:
            p = proba / np.clip(proba.sum(1, keepdims=True), 1e-12, None)
            out["auroc"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(c)))
        else:
            out["auroc"] = None
    except ValueError:
        out["auroc"] = None
    return out
