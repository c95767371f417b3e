"""A small weather data set with named columns, and a scikit-learn classifier trained on it.

Drawn from the MLServer example's generator with a fixed seed, so that every run serves the same
model the same rows.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier

# The days come from the MLServer example's own generator, so the example and the tests serve one
# data set.
_spec = importlib.util.spec_from_file_location(
    "mlserver_example_train",
    Path(__file__).resolve().parents[2] / "examples" / "mlserver" / "train.py",
)
_example = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_example)  # type: ignore[union-attr]

FEATURES = tuple(_example.FEATURES)
LABEL = "weather"


def weather(n: int, seed: int, shift: dict[str, float] | None = None) -> tuple[np.ndarray, list]:
    """``n`` days: the features (n x 4, in ``FEATURES`` order) and the weather of each day.

    ``shift`` adds a constant to the named features after the labels are drawn, as a change of
    instrument or season would: the labels no longer follow from the served features.
    """
    x, days_weather = _example.days(n, seed)
    for name, delta in (shift or {}).items():
        x[:, FEATURES.index(name)] += delta
    return x, days_weather.tolist()


def train(seed: int = 1, n: int = 3_000) -> tuple[RandomForestClassifier, np.ndarray, list]:
    """A classifier fitted on ``n`` days, and those days."""
    x, y = weather(n, seed)
    model = RandomForestClassifier(n_estimators=30, max_depth=6, random_state=0).fit(x, y)
    return model, x, y


def write_training_csv(path: Path, model: RandomForestClassifier, x: np.ndarray, y: list) -> None:
    """The training data as a user keeps it: features, the label and the model's prediction."""
    predicted = model.predict(x)
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow([*FEATURES, LABEL, "predict"])
        for row, label, guess in zip(x.tolist(), y, predicted.tolist(), strict=True):
            out.writerow([*row, label, guess])
