"""Label tallies in the summaries: the same quality figures as the raw rows, after they expire too.

Real models on scikit-learn's bundled data sets make the predictions; labels arrive after them,
some twice and some changed, as clients send them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from inferwatch.middleware.baseline.model_scope import scoped_cursors
from inferwatch.middleware.evaluation.label_files import import_label_file
from inferwatch.middleware.evaluation.labels import Label, write_labels
from inferwatch.middleware.evaluation.quality import evaluate
from inferwatch.middleware.evaluation.tallies import TALLY_FIGURES, read_tallies
from inferwatch.middleware.store.database import Store
from inferwatch.middleware.summaries.retention import maintain_summaries
from tests.middleware.evaluation.conftest import HOUR, NOW, insert
from tests.middleware.evaluation.test_evaluation import KINDS, scenario


@pytest.fixture
def store(db_path: str) -> Iterator[Store]:
    opened = Store(db_path)
    yield opened
    opened.close()


def run(store: Store, **kw: Any) -> dict[str, Any]:
    cursor = store.cursor()
    try:
        return evaluate(cursor, **{"window_s": HOUR, "now": NOW, **kw})
    finally:
        cursor.close()


def label(store: Store, ids: list[str], values: Any, *, late_s: float = 60.0) -> None:
    items = [
        Label(i, 0, v.item() if isinstance(v, np.generic) else v)
        for i, v in zip(ids, values, strict=True)
    ]
    write_labels(store, items, received_at=NOW + timedelta(seconds=late_s))


def wine() -> tuple[dict[str, Any], np.ndarray]:
    """A multiclass model's string predictions and the true classes."""
    data = load_wine()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.02, max_iter=500))
    model.fit(data.data[::3], data.target[::3])
    names = np.array(["barolo", "grignolino", "barbera"], dtype=object)
    return {"prediction": names[model.predict(data.data)]}, names[data.target]


def cancer() -> tuple[dict[str, Any], np.ndarray]:
    """A binary model's probability of class 1 (cut at 0.5 by evaluation), and 0/1 labels."""
    data = load_breast_cancer()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500))
    model.fit(data.data[::4], data.target[::4])
    return {"score": model.predict_proba(data.data)[:, 1]}, data.target.astype(np.float64)


def diabetes() -> tuple[dict[str, Any], np.ndarray]:
    """A regression model's predictions and the true values."""
    data = load_diabetes()
    model = Ridge(alpha=1.0).fit(data.data[::2], data.target[::2])
    return {"prediction": model.predict(data.data)}, data.target


CASES = {"multiclass strings": wine, "binary probability": cancer, "regression": diabetes}


def labelled(store: Store, case: str) -> dict[str, Any]:
    """Predictions in the hour before NOW, labelled in three batches: every row with a wrong
    label for a tenth, the same batch again, then the tenth corrected."""
    outputs, truth = CASES[case]()
    ids = insert(store, outputs)
    wrong = truth.copy()
    tenth = slice(0, None, 10)
    wrong[tenth] = np.roll(truth[tenth], 1) if case != "regression" else truth[tenth] * 3 + 1
    label(store, ids, wrong)
    label(store, ids, wrong, late_s=120)
    label(store, ids[tenth], truth[tenth], late_s=180)
    return {"ids": ids, "truth": truth}


def assert_same(got: dict[str, Any], want: dict[str, Any], task: str) -> None:
    for key in TALLY_FIGURES[task]:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    if task == "classification":
        assert got["per_class"].keys() == want["per_class"].keys()
        for name, figures in want["per_class"].items():
            assert got["per_class"][name] == pytest.approx(figures, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_tallies_give_the_raw_rows_figures(store: Store, case: str) -> None:
    truth = labelled(store, case)["truth"]
    report = run(store)
    task = "regression" if case == "regression" else "classification"
    assert report["task"] == task and report["metrics_source"] == "rows"
    assert report["metrics"]["labels"] == truth.size
    section = report["tallies"]
    assert section["labels"] == truth.size and section["figures"] == TALLY_FIGURES[task]
    assert (section["start"], section["end"]) == ("2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z")
    assert_same(section["metrics"], report["metrics"], task)
    if case == "binary probability":  # figures that need each row's probability stay raw
        assert report["metrics"]["roc_auc"] is not None
        assert section["metrics"]["roc_auc"] is None


@pytest.mark.parametrize("case", list(CASES))
def test_tallies_answer_after_the_raw_rows_expire(store: Store, case: str) -> None:
    labelled(store, case)
    before = run(store)
    week = run(store, window_s=7 * 86400, now=NOW + timedelta(days=3))
    store.delete_older_than(NOW + timedelta(hours=1))
    for table in ("features", "labels"):
        assert store.writer.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    # a week later, minutes rolled up into hours: the same figures, from tallies alone
    maintain_summaries(
        store.writer,
        (NOW + timedelta(days=7)).replace(tzinfo=None),
        retention_s=30 * 86400,
        rollup_after_s=86400,
    )
    after = run(store, window_s=7 * 86400, now=NOW + timedelta(days=3))
    task = before["task"]
    assert after["status"] == before["status"] == "ok"
    assert after["metrics_source"] == "tallies" and after["task"] == task
    assert after["window"]["labels"] == before["window"]["labels"]
    assert after["prediction_field"] == before["prediction_field"]
    assert_same(after["metrics"], before["metrics"], task)
    assert_same(after["metrics"], week["metrics"], task)
    assert after["buckets"] == [] and after["change"] == {"detected": False}


def test_a_label_file_and_a_repeated_post_count_once(store: Store, tmp_path: Path) -> None:
    outputs, truth = wine()
    ids = insert(store, outputs)
    path = tmp_path / "labels.csv"
    path.write_text(
        "request_id,label\n" + "".join(f"{i},{v}\n" for i, v in zip(ids, truth, strict=True))
    )
    import_label_file(store, str(path), received_at=NOW)
    import_label_file(store, str(path), received_at=NOW)
    label(store, ids[:50], truth[:50])
    found, _ = read_tallies(store.writer, NOW - timedelta(hours=1), NOW)
    assert found["prediction"].labels("classification") == truth.size
    report = run(store)
    assert_same(report["tallies"]["metrics"], report["metrics"], "classification")


def test_a_label_before_its_prediction_is_not_tallied(store: Store) -> None:
    label(store, ["r0", "r1"], [1.0, 0.0])
    insert(store, {"prediction": [1, 0]})
    report = run(store, min_labels=1)
    assert report["metrics"]["labels"] == 2 and report["tallies"] is None


@pytest.mark.parametrize("kind", KINDS)
def test_tallies_agree_in_every_scenario_of_the_raw_tests(store: Store, kind: str) -> None:
    outputs, labels, _ = scenario(kind, 600, seed=KINDS.index(kind))
    label(store, insert(store, outputs), labels)
    report = run(store)
    if kind == "multiclass, argmax of the vector":  # an argmax per row: raw rows only
        assert report["tallies"] is None and report["metrics_source"] == "rows"
        return
    assert report["tallies"]["labels"] == 600
    assert_same(report["tallies"]["metrics"], report["metrics"], report["task"])


def test_a_models_evaluation_reads_its_own_tallies(store: Store) -> None:
    outputs, truth = wine()
    ids = insert(store, outputs)
    for table in ("feature_columns", "requests"):  # every request named model m1
        store.writer.execute(f"UPDATE {table} SET model = 'm1'")
    label(store, ids, truth)

    def scoped(model: str, **kw: Any) -> dict[str, Any]:
        cursor = scoped_cursors(store.cursor, model)()
        try:
            return evaluate(cursor, **{"window_s": HOUR, "now": NOW, "model": model, **kw})
        finally:
            cursor.close()

    raw = scoped("m1")
    assert raw["tallies"]["labels"] == truth.size
    assert_same(raw["tallies"]["metrics"], raw["metrics"], "classification")
    store.delete_older_than(NOW + timedelta(hours=1))
    assert_same(scoped("m1")["metrics"], raw["metrics"], "classification")
    assert_same(run(store)["metrics"], raw["metrics"], "classification")  # every request
    other = scoped("m2", prediction="prediction")
    assert other["status"] == "no_labels" and other["metrics"] is None
