"""A small weather data set with named columns, and a scikit-learn classifier trained on it.

Made here from a fixed seed, so that every run serves the same model the same rows.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier

FEATURES = ("precipitation", "temp_max", "temp_min", "wind")
LABEL = "weather"


def weather(n: int, seed: int, shift: dict[str, float] | None = None) -> tuple[np.ndarray, list]:
    """``n`` days: the features (n x 4, in ``FEATURES`` order) and the weather of each day.

    ``shift`` adds a constant to the named features after the labels are drawn, as a change of
    instrument or season would: the labels no longer follow from the served features.
    """
    rng = np.random.default_rng(seed)
    temp_max = rng.normal(16.0, 7.0, n)
    temp_min = temp_max - rng.gamma(4.0, 2.0, n)
    wind = rng.gamma(3.0, 1.1, n)
    precipitation = np.where(rng.random(n) < 0.45, rng.gamma(1.5, 4.0, n), 0.0)
    weather = np.where(
        precipitation > 1.0,
        np.where(temp_max < 4.0, "snow", "rain"),
        np.where((wind < 2.0) & (rng.random(n) < 0.5), "fog", "sun"),
    )
    noisy = rng.random(n) < 0.08  # some days the station's record disagrees
    weather = np.where(noisy, rng.choice(["rain", "sun", "fog", "snow"], n), weather)
    x = np.column_stack([precipitation, temp_max, temp_min, wind]).round(2)
    for name, delta in (shift or {}).items():
        x[:, FEATURES.index(name)] += delta
    return x, weather.tolist()


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
