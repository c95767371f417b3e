"""Quality figures against scikit-learn's on the same arrays, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from inferwatch.middleware.evaluation.metrics import classification_metrics, regression_metrics


def test_metric_functions_handle_what_scikit_learn_does() -> None:
    y, p = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])  # class 2 predicted, never true
    got = classification_metrics(y, p, ["a", "b", "c"])
    assert got["macro_precision"] == pytest.approx(
        sk.precision_score(y, p, average="macro", zero_division=0)
    )
    assert got["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    constant = np.array([2.0, 2.0, 2.0])
    assert regression_metrics(constant, constant)["r2"] == sk.r2_score(constant, constant)
    assert regression_metrics(constant, constant + 1)["r2"] == sk.r2_score(constant, constant + 1)
    zero = np.array([0.0, 1.0])
    assert regression_metrics(zero, zero + 0.5)["mape"] == pytest.approx(
        sk.mean_absolute_percentage_error(zero, zero + 0.5)
    )


@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("levels", [4, 1000])  # few distinct scores: many ties
def test_log_loss_and_roc_auc_equal_scikit_learns(classes: int, levels: int) -> None:
    rng = np.random.default_rng(classes * levels)
    n = 2_000
    y = rng.integers(0, classes, n)
    raw = np.round(rng.random((n, classes)) * levels) + 1.0
    raw[np.arange(n), y] += levels * 0.3  # some skill, so the AUC is not 0.5
    proba = raw / raw.sum(axis=1, keepdims=True)
    p = proba.argmax(axis=1)
    got = classification_metrics(y, p, [str(c) for c in range(classes)], proba)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, p))
    assert got["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro", zero_division=0))
    assert got["log_loss"] == pytest.approx(sk.log_loss(y, proba, labels=range(classes)))
    want = (
        sk.roc_auc_score(y, proba[:, 1])
        if classes == 2
        else sk.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    )
    assert got["roc_auc"] == pytest.approx(want)


def test_rows_without_probabilities_are_left_out_of_log_loss_only() -> None:
    y, p = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan], [0.6, 0.4]])
    got = classification_metrics(y, p, ["0", "1"], proba)
    assert got["accuracy"] == 0.75  # every row
    known = [0, 1, 3]
    assert got["log_loss"] == pytest.approx(sk.log_loss(y[known], proba[known]))
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(y[known], proba[known, 1]))


def test_roc_auc_is_none_with_one_class_only() -> None:
    y = np.zeros(10, dtype=np.int64)
    proba = np.column_stack([np.full(10, 0.7), np.full(10, 0.3)])
    assert classification_metrics(y, y, ["0", "1"], proba)["roc_auc"] is None


def test_regression_metrics_equal_scikit_learns() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(10, 3, 500)
    p = y + rng.normal(0, 1, 500)
    got = regression_metrics(y, p)
    assert got["labels"] == 500
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, p))
    assert got["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y, p)))
    assert got["mape"] == pytest.approx(sk.mean_absolute_percentage_error(y, p))
    assert got["r2"] == pytest.approx(sk.r2_score(y, p))
