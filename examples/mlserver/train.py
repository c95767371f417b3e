"""Make the weather data, fit the classifier and lay out the MLServer model folder.

    python train.py                 # writes train.csv and models/weather/model.joblib

The data are made from a fixed seed: daily precipitation, temperatures and wind, and the
weather a station recorded. ``train.csv`` keeps the features, the label (``weather``) and the
model's prediction (``predict``, the name MLServer gives its output), which the baseline needs.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import joblib
import numpy as np
from sklearn.ensemble import RandomForestClassifier

HERE = Path(__file__).resolve().parent
FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]


def days(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` days of features (n x 4, in ``FEATURES`` order) and their recorded weather."""
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
    return np.column_stack([precipitation, temp_max, temp_min, wind]).round(2), weather


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for train.csv and models/")
    args = parser.parse_args()
    x, y = days(3_000, seed=1)
    model = RandomForestClassifier(n_estimators=30, max_depth=6, random_state=0).fit(x, y)
    folder = args.out / "models" / "weather"
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    with open(args.out / "train.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow([*FEATURES, "weather", "predict"])
        for row, label, guess in zip(x.tolist(), y, model.predict(x), strict=True):
            out.writerow([*row, label, guess])


if __name__ == "__main__":
    main()
