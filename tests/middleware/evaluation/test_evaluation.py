"""Continuous evaluation: labels joined with captured predictions, metrics, degradation, change."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from sklearn import metrics as sk

from inferwatch import MonitorError
from inferwatch.middleware.baseline.build import build_baseline, load_baseline
from inferwatch.middleware.drift.report import run_check
from inferwatch.middleware.evaluation.changes import page_hinkley, rank_scores
from inferwatch.middleware.evaluation.labels import Label, write_labels
from inferwatch.middleware.evaluation.quality import evaluate
from inferwatch.middleware.store.database import Store
from tests.middleware.evaluation.conftest import HOUR, NOW, insert


def label(store: Store, ids: list[str], values: Any, *, at: datetime = NOW) -> dict[str, int]:
    """Write one label per id (row 0), received at ``at``."""
    items = [
        Label(i, 0, v.item() if isinstance(v, np.generic) else v)
        for i, v in zip(ids, values, strict=True)
    ]
    return write_labels(store, items, received_at=at)


def run(store: Store, **kw: Any) -> dict[str, Any]:
    cursor = store.cursor()
    try:
        return evaluate(cursor, **{"window_s": HOUR, "now": NOW, **kw})
    finally:
        cursor.close()


@pytest.fixture
def store(db_path: str) -> Iterator[Store]:
    opened = Store(db_path)
    yield opened
    opened.close()


# ---------------------------------------------------------------- concept change


def write_csv(path: Path, columns: Mapping[str, np.ndarray]) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(zip(*(values.tolist() for values in columns.values()), strict=True))
    return str(path)


def test_a_concept_change_shows_as_a_drop_located_near_its_row(
    store: Store, tmp_path: Path
) -> None:
    """The inputs and the model stay the same; what the right answer is changes at row 3,600."""
    rng = np.random.default_rng(7)
    n, change = 6000, 3600

    def world(rows: int, flipped: bool) -> tuple[np.ndarray, ...]:
        x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
        prediction = (x1 + 0.5 * x2 > 0).astype(np.int64)
        truth = x1 + (-0.5 if flipped else 0.5) * x2 + rng.normal(0, 0.3, rows) > 0
        return x1, x2, prediction, truth.astype(np.int64)

    b1, b2, bp, by = world(5000, False)
    source = write_csv(tmp_path / "train.csv", {"x1": b1, "x2": b2, "prediction": bp, "label": by})
    build_baseline(
        source, out=str(tmp_path / "b.json"), label_column="label", prediction_column="prediction"
    )
    baseline = load_baseline(str(tmp_path / "b.json"))
    assert baseline.quality is not None and baseline.quality["accuracy"] > 0.85

    before, after = world(change, False), world(n - change, True)
    x1, x2, prediction, truth = (np.concatenate(pair) for pair in zip(before, after, strict=True))
    ids = insert(store, {"prediction": prediction}, inputs={"x1": x1, "x2": x2})
    assert label(store, ids, truth) == {"accepted": n, "matched": n}

    report = run(store, baseline_quality=baseline.quality)

    assert report["status"] == "degraded" and report["degraded"]
    assert report["task"] == "classification" and report["prediction_field"] == "prediction"
    assert "accuracy" in report["reasons"][0]
    first, last = report["buckets"][0]["metrics"], report["buckets"][-1]["metrics"]
    assert first["accuracy"] > 0.85 > last["accuracy"] + 0.1
    found = report["change"]
    assert found["detected"] and abs(found["row"] - change) < 300
    assert found["error_rate_after"] > found["error_rate_before"] + 0.1
    change_time = NOW - timedelta(seconds=HOUR - 1) + timedelta(seconds=(HOUR - 1) * change / n)
    at = datetime.fromisoformat(found["at"])
    assert abs((at - change_time).total_seconds()) < 300 * (HOUR / n)

    drift = run_check(store.cursor, baseline, window_s=HOUR, now=NOW)
    assert drift["features"] and not drift["drift_detected"]


# ---------------------------------------------------------------- metrics against scikit-learn


def softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def scenario(kind: str, n: int, seed: int) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """Outputs as the capture names them, labels, and what scikit-learn needs to check them."""
    rng = np.random.default_rng(seed)
    if kind == "binary, scalar probability":
        y = (rng.random(n) < 0.35).astype(np.int64)
        p1 = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0.001, 0.999).round(4)
        pred = (p1 >= 0.5).astype(np.int64)
        pred[:7] = 1 - pred[:7]  # a model whose label and probability disagree now and then
        outputs = {"prediction.label": pred, "prediction.proba": p1}
        return outputs, y.tolist(), {"y": y, "p": pred, "proba": p1, "classes": [0, 1]}
    if kind == "multiclass strings, probability vector":
        classes = ["bird", "cat", "dog"]
        y = rng.integers(0, 3, n)
        proba = softmax(rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y])
        pred = proba.argmax(axis=1)
        pred[:11] = (pred[:11] + 1) % 3
        names = np.array(classes, dtype=object)
        outputs = {"prediction.label": names[pred]}
        outputs |= {f"prediction.probabilities[{i}]": proba[:, i] for i in range(3)}
        expect = {"y": names[y], "p": names[pred], "proba": proba, "classes": classes}
        return outputs, names[y].tolist(), expect
    if kind == "multiclass, argmax of the vector":
        y = rng.integers(0, 4, n)
        proba = softmax(rng.normal(size=(n, 4)) + 1.2 * np.eye(4)[y])
        outputs = {f"prediction[{i}]": proba[:, i] for i in range(4)}
        expect = {"y": y, "p": proba.argmax(axis=1), "proba": proba, "classes": [0, 1, 2, 3]}
        return outputs, y.tolist(), expect
    if kind == "binary, thresholded score, boolean labels":
        y = rng.random(n) < 0.5
        p1 = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0.0, 1.0)
        outputs = {"prediction": p1}
        return outputs, y.tolist(), {"y": y, "p": p1 >= 0.5, "proba": p1, "classes": [False, True]}
    y = rng.lognormal(3, 0.5, n)
    pred = y * rng.normal(1, 0.15, n) + rng.normal(0, 2, n)
    return {"prediction": pred}, y.tolist(), {"y": y, "p": pred}


def expected_classification(e: dict[str, Any]) -> dict[str, Any]:
    y, p, proba, classes = e["y"], e["p"], e["proba"], e["classes"]
    precision, recall, f1, support = sk.precision_recall_fscore_support(y, p, zero_division=0)
    macro = sk.precision_recall_fscore_support(y, p, average="macro", zero_division=0)
    binary = np.ndim(proba) == 1
    return {
        "accuracy": sk.accuracy_score(y, p),
        "macro_precision": macro[0],
        "macro_recall": macro[1],
        "macro_f1": macro[2],
        "log_loss": sk.log_loss(y, proba, labels=classes),
        "roc_auc": sk.roc_auc_score(y, proba)
        if binary
        else sk.roc_auc_score(y, proba, multi_class="ovr", labels=classes),
        "per_class": (precision, recall, f1, support),
    }


def expected_regression(e: dict[str, Any]) -> dict[str, float]:
    y, p = e["y"], e["p"]
    return {
        "mae": sk.mean_absolute_error(y, p),
        "rmse": sk.root_mean_squared_error(y, p),
        "mape": sk.mean_absolute_percentage_error(y, p),
        "r2": sk.r2_score(y, p),
    }


KINDS = (
    "binary, scalar probability",
    "multiclass strings, probability vector",
    "multiclass, argmax of the vector",
    "binary, thresholded score, boolean labels",
    "regression",
)


@pytest.mark.parametrize("kind", KINDS)
def test_metrics_equal_scikit_learns_on_the_same_joined_rows(store: Store, kind: str) -> None:
    n = 2400
    outputs, labels, expect = scenario(kind, n, seed=KINDS.index(kind))
    ids = insert(store, outputs)
    label(store, ids, labels)
    report = run(store, buckets=4)
    assert report["status"] == "ok" and report["window"]["labels"] == n
    assert report["coverage"] == 1.0
    got = report["metrics"]
    if kind == "regression":
        assert report["task"] == "regression"
        assert got == pytest.approx({"labels": n, **expected_regression(expect)}, rel=1e-9)
    else:
        assert report["task"] == "classification"
        want = expected_classification(expect)
        precision, recall, f1, support = want.pop("per_class")
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        rows = list(got["per_class"].values())
        assert [r["support"] for r in rows] == support.tolist()
        assert [r["precision"] for r in rows] == pytest.approx(precision.tolist())
        assert [r["recall"] for r in rows] == pytest.approx(recall.tolist())
        assert [r["f1"] for r in rows] == pytest.approx(f1.tolist())
    # each bucket is the same computation over its own rows (a quarter each, in time order)
    part = {k: v[n // 4 : n // 2] for k, v in expect.items() if k != "classes"}
    part["classes"] = expect.get("classes")
    bucket = report["buckets"][1]
    assert bucket["labels"] == bucket["predictions"] == n // 4
    if kind == "regression":
        assert bucket["metrics"]["r2"] == pytest.approx(expected_regression(part)["r2"])
    else:
        want = expected_classification(part)
        assert bucket["metrics"]["accuracy"] == pytest.approx(want["accuracy"])
        assert bucket["metrics"]["roc_auc"] == pytest.approx(want["roc_auc"])


# ---------------------------------------------------------------- coverage, delay, statuses


def test_late_labels_count_in_their_predictions_bucket_and_report_the_delay(store: Store) -> None:
    three_days = 3 * 86400.0
    ids = insert(store, {"prediction": [1, 0] * 50}, end=NOW - timedelta(days=3), span_s=60)
    label(store, ids, [1, 0] * 25 + [0, 1] * 25, at=NOW)
    report = run(store, window_s=7 * 86400, buckets=7)
    assert report["window"] == {
        "start": "2026-02-22T12:00:00Z",
        "end": "2026-03-01T12:00:00Z",
        "seconds": 7 * 86400,
        "predictions": 100,
        "labels": 100,
    }
    assert three_days <= report["label_delay_s"]["p50"] <= three_days + 60
    assert report["label_delay_s"]["p90"] <= three_days + 60
    assert [b["labels"] for b in report["buckets"]] == [0, 0, 0, 100, 0, 0, 0]
    assert report["metrics"]["accuracy"] == 0.5
    assert run(store)["status"] == "no_labels"  # the last hour saw no predictions


def test_coverage_counts_labelled_predictions_and_ignores_labels_of_unknown_rows(
    store: Store,
) -> None:
    ids = insert(store, {"prediction": [0, 1] * 50})
    counts = label(store, ids[:40] + [f"ghost{i}" for i in range(10)], [0, 1] * 25)
    assert counts == {"accepted": 50, "matched": 40}
    report = run(store)
    assert report["window"]["predictions"] == 100 and report["window"]["labels"] == 40
    assert report["coverage"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("labels", "status"), [(0, "no_labels"), (10, "insufficient_labels"), (30, "ok")]
)
def test_status_needs_enough_labels(store: Store, labels: int, status: str) -> None:
    ids = insert(store, {"prediction": [1] * 40})
    label(store, ids[:labels], [1] * labels)
    report = run(store, baseline_quality={"task": "classification", "accuracy": 0.9, "rows": 9})
    assert report["status"] == status
    assert report["degraded"] is False
    assert (report["metrics"] is None) == (labels == 0)


# ---------------------------------------------------------------- which field is what


def column(kind: str, n: int = 60) -> list[Any]:
    rng = np.random.default_rng(3)
    return {
        "int": rng.integers(0, 2, n).tolist(),
        "str": [["cat", "dog"][i] for i in rng.integers(0, 2, n)],
        "unit": rng.random(n).round(3).tolist(),
        "float": (rng.random(n) * 100).tolist(),
    }[kind]


@pytest.mark.parametrize(
    ("outputs", "labels", "want"),
    [
        ({"prediction": "int"}, "int", ("prediction", None, "classification")),
        ({"prediction": "str"}, "str", ("prediction", None, "classification")),
        ({"prediction": "float"}, "float", ("prediction", None, "regression")),
        ({"prediction": "unit"}, "int", ("prediction", "prediction", "classification")),
        ({"prediction": "unit"}, "float", ("prediction", None, "regression")),
        ({"score": "float"}, "float", ("score", None, "regression")),
        ({"probability": "unit"}, "int", ("probability", "probability", "classification")),
        ({"label": "str", "score": "unit"}, "str", ("label", "score", "classification")),
        (
            {"prediction.class": "int", "prediction.proba": "unit"},
            "int",
            ("prediction.class", "prediction.proba", "classification"),
        ),
        (
            {"prediction[0]": "unit", "prediction[1]": "unit"},
            "int",
            ("prediction[*]", "prediction[*]", "classification"),
        ),
        (
            {"y": "int", "probs[0]": "unit", "probs[1]": "unit"},
            "int",
            ("y", "probs[*]", "classification"),
        ),
        ({"a": "int", "b": "int"}, "int", (None, None, None)),
    ],
)
def test_prediction_probability_and_task_are_inferred_when_clear(
    store: Store, outputs: dict[str, str], labels: str, want: tuple[Any, ...]
) -> None:
    ids = insert(store, {name: column(kind) for name, kind in outputs.items()})
    label(store, ids, column(labels))
    report = run(store)
    got = (report["prediction_field"], report["probability_field"], report["task"])
    assert got == want
    if want[0] is None:
        assert report["status"] == "unknown_prediction"
        assert "prediction_output" in report["reasons"][0]


def test_settings_override_the_inference(store: Store) -> None:
    ids = insert(store, {"a": column("int"), "b": column("float"), "c": column("unit")})
    label(store, ids, column("int"))
    assert run(store)["status"] == "unknown_prediction"
    report = run(store, prediction="b", task="regression")
    assert (report["prediction_field"], report["task"]) == ("b", "regression")
    report = run(store, prediction="a", probability="c")
    assert (report["prediction_field"], report["probability_field"]) == ("a", "c")
    assert report["task"] == "classification" and report["metrics"]["roc_auc"] is not None
    report = run(store, prediction="nope")
    assert report["status"] == "unknown_prediction"
    assert report["reasons"] == ["No output field 'nope' in the window."]


def test_a_score_that_is_the_predicted_class_confidence_is_read_as_such(store: Store) -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    p1 = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0.01, 0.99)
    pred = (p1 >= 0.5).astype(int)
    confidence = np.where(pred == 1, p1, 1 - p1)  # what {"label": 1, "score": 0.8} APIs send
    ids = insert(store, {"label": pred, "score": confidence})
    label(store, ids, y)
    report = run(store)
    assert any("confidence" in note for note in report["notes"])
    assert report["metrics"]["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p1))
    assert report["metrics"]["log_loss"] == pytest.approx(sk.log_loss(y, p1))


# ---------------------------------------------------------------- degradation


def accuracy_window(store: Store, n: int, accuracy: float) -> None:
    wrong = round(n * (1 - accuracy))
    ids = insert(store, {"prediction": [1] * n})
    label(store, ids, [0] * wrong + [1] * (n - wrong))


@pytest.mark.parametrize(("n", "degraded"), [(100, False), (20_000, True)])
def test_the_margin_shrinks_as_the_window_grows(store: Store, n: int, degraded: bool) -> None:
    """Accuracy 0.89 against a baseline's 0.93: noise at 100 labels, a drop at 20,000."""
    accuracy_window(store, n, 0.89)
    quality = {"task": "classification", "accuracy": 0.93, "macro_f1": 0.9, "rows": 10_000}
    report = run(store, baseline_quality=quality)
    assert report["degraded"] is degraded
    assert report["status"] == ("degraded" if degraded else "ok")
    assert report["baseline"]["accuracy"] == 0.93 and report["baseline"]["rows"] == 10_000
    limit = report["baseline"]["limits"]["accuracy"]
    assert (limit > 0.89) is degraded and limit < 0.93 - 0.02


def test_regression_is_degraded_when_its_error_rises_beyond_the_margin(store: Store) -> None:
    rng = np.random.default_rng(11)
    y = rng.normal(50, 10, 2000)
    ids = insert(store, {"prediction": y + rng.normal(0, 2.0, y.size)})
    label(store, ids, y)
    calm = {"task": "regression", "mae": 1.6, "rmse": 2.0, "r2": 0.96, "rows": 5000}
    assert run(store, baseline_quality=calm)["status"] == "ok"
    sharp = calm | {"mae": 1.0, "rmse": 1.25}
    report = run(store, baseline_quality=sharp)
    assert report["status"] == "degraded"
    assert [r.split()[0] for r in report["reasons"]] == ["mae", "rmse"]
    other = run(store, baseline_quality={"task": "classification", "accuracy": 0.99, "rows": 9})
    assert other["status"] == "ok" and other["reasons"] == []


# ---------------------------------------------------------------- the change detector


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rate", [0.02, 0.1, 0.4])
def test_page_hinkley_stays_quiet_on_an_unchanged_stream(seed: int, rate: float) -> None:
    errors = (np.random.default_rng(seed).random(20_000) < rate).astype(float)
    assert page_hinkley(errors) is None


@pytest.mark.parametrize(("before", "after"), [(0.05, 0.15), (0.1, 0.3), (0.02, 0.1)])
def test_page_hinkley_locates_a_rise_in_the_error_rate(before: float, after: float) -> None:
    rng = np.random.default_rng(1)
    errors = np.concatenate([rng.random(8000) < before, rng.random(4000) < after]).astype(float)
    found = page_hinkley(errors)
    assert found is not None and abs(found.row - 8000) < 400
    assert found.row <= found.detected_row < 9000
    assert found.after > found.before


def test_ranked_absolute_errors_ignore_outliers_but_not_a_shift() -> None:
    rng = np.random.default_rng(2)
    heavy = np.abs(rng.standard_t(1.5, 20_000))  # outliers, no change
    assert page_hinkley(rank_scores(heavy)) is None
    shifted = np.concatenate([heavy[:12_000], heavy[12_000:] * 2.0])
    found = page_hinkley(rank_scores(shifted))
    assert found is not None and abs(found.row - 12_000) < 800


def test_a_store_without_the_labels_table_is_one_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "old.duckdb")
    con = duckdb.connect(path)
    con.execute(
        "CREATE TABLE features (ts TIMESTAMP, request_id VARCHAR, row_index INTEGER, "
        "role VARCHAR, name VARCHAR, type VARCHAR, num DOUBLE, str VARCHAR)"
    )
    con.execute(
        "INSERT INTO features VALUES (?, 'r', 0, 'output', 'prediction', 'number', 1, NULL)",
        [NOW.replace(tzinfo=None) - timedelta(minutes=1)],
    )
    with pytest.raises(MonitorError, match=r"^Evaluating the log store failed: .*labels"):
        evaluate(con.cursor(), window_s=HOUR, now=NOW)
    con.close()


# ---------------------------------------------------------------- the task before labels


@pytest.mark.parametrize(
    ("outputs", "quality", "task"),
    [
        ({"prediction": ["yes", "no", "yes"]}, None, "classification"),
        (
            {"prediction": [3.0, 5.0, 4.0]},
            {"task": "regression", "mae": 1.0, "rows": 9},
            "regression",
        ),
        ({"prediction": [0.2, 0.7, 0.4]}, {"task": "classification", "rows": 9}, "classification"),
    ],
)
def test_before_labels_the_task_is_the_baselines_or_that_of_string_predictions(
    store: Store, outputs: dict[str, list[Any]], quality: dict[str, Any] | None, task: str
) -> None:
    insert(store, outputs)
    report = run(store, baseline_quality=quality)
    assert report["status"] == "no_labels"
    assert report["task"] == task
