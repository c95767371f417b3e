"""Model quality figures as scikit-learn computes them, over label and prediction arrays.

Plain NumPy, so that a window of a million labels is scored without a Python loop; the tests
compare every figure with scikit-learn's on the same rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["EPS", "classification_metrics", "count_metrics", "regression_metrics"]

EPS = float(np.finfo(np.float64).eps)  # scikit-learn's clip for log loss and MAPE
_MAX_PER_CLASS = 100  # per-class figures listed, by support


def classification_metrics(
    y: np.ndarray,
    p: np.ndarray,
    classes: list[str],
    proba: np.ndarray | None = None,
    *,
    per_class: bool = True,
) -> dict[str, Any]:
    """Accuracy, macro and per-class precision, recall and F1, log loss and ROC AUC.

    ``y`` and ``p`` are codes into ``classes``; ``proba`` (rows x classes) the predicted
    probabilities, NaN where unknown. As scikit-learn: the macro average is over the classes
    present in ``y`` or ``p``, and a ratio with nothing to divide is 0.
    """
    width = len(classes)
    support = np.bincount(y, minlength=width)
    predicted = np.bincount(p, minlength=width)
    hits = np.bincount(y[y == p], minlength=width)
    out = count_metrics(support, predicted, hits, classes, per_class=per_class)
    if proba is not None:
        known = ~np.isnan(proba).any(axis=1)
        out.update(_probability_metrics(y[known], proba[known], support[support > 0].size))
    return out


def count_metrics(
    support: np.ndarray,
    predicted: np.ndarray,
    hits: np.ndarray,
    classes: list[str],
    *,
    per_class: bool = True,
) -> dict[str, Any]:
    """The figures of :func:`classification_metrics` that a confusion matrix gives: from the
    labels per class (``support``), predictions per class and hits per class (its diagonal).
    ``log_loss`` and ``roc_auc`` need each row's probabilities and are None here."""
    width = len(classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        total = precision + recall
        f1 = np.where(total > 0, 2 * precision * recall / total, 0.0)
    present = (support > 0) | (predicted > 0)
    labels = int(support.sum())
    out: dict[str, Any] = {
        "labels": labels,
        "accuracy": float(hits.sum() / labels),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "log_loss": None,
        "roc_auc": None,
    }
    if per_class:
        top = np.argsort(-support, kind="stable")[: min(width, _MAX_PER_CLASS)]
        out["per_class"] = {
            classes[c]: {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c in sorted(top)
            if present[c]
        }
    return out


def _probability_metrics(y: np.ndarray, proba: np.ndarray, seen: int) -> dict[str, float | None]:
    if y.size == 0:
        return {}
    chosen = np.clip(proba[np.arange(y.size), y], EPS, 1 - EPS)
    out: dict[str, float | None] = {"log_loss": float(-np.log(chosen).mean())}
    if proba.shape[1] == 2:  # binary: the greater class is the positive one
        out["roc_auc"] = _auc(proba[:, 1], y == 1)
    elif seen > 2:  # one-vs-rest, averaged over the classes present
        scores = [_auc(proba[:, c], y == c) for c in np.unique(y)]
        valid = [s for s in scores if s is not None]
        out["roc_auc"] = float(np.mean(valid)) if valid else None
    return out


def _auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic: average ranks of the positives, ties counted half."""
    pos = int(positive.sum())
    neg = positive.size - pos
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(score)  # ties are grouped below, so their order does not matter
    ranked = score[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], ranked.size]
    hits = np.add.reduceat(positive[order].astype(np.int64), starts)
    rank_sum = float(np.dot(hits, (starts + ends + 1) / 2.0))
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE, MAPE and R2 as scikit-learn computes them (R2 of constant labels: 1 or 0)."""
    error = p - y
    sse = float(np.dot(error, error))
    sst = float(((y - y.mean()) ** 2).sum())
    return {
        "labels": int(y.size),
        "mae": float(np.abs(error).mean()),
        "rmse": math.sqrt(sse / y.size),
        "mape": float((np.abs(error) / np.maximum(np.abs(y), EPS)).mean()),
        "r2": 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0),
    }
