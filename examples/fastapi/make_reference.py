"""Write reference.csv: 400 customers as the model saw them before release, with its outputs.

Run from the repository root: ``python -m examples.fastapi.make_reference``. The data are drawn
with a fixed seed, so the file (and the baseline built from it) is reproducible.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from examples.fastapi.model import CONTRACTS, FEATURES, ChurnModel

ROWS = 400
OUT = Path(__file__).with_name("reference.csv")


def main() -> None:
    rng = random.Random(7)
    model = ChurnModel()
    with OUT.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*FEATURES, "churned", "prediction"])
        for _ in range(ROWS):
            row = {
                "tenure_months": rng.randint(0, 72),
                "monthly_charges": round(min(120.0, max(18.0, rng.gauss(70.0, 25.0))), 2),
                "support_calls": min(10, int(rng.expovariate(0.6))),
                "contract": rng.choices(CONTRACTS, weights=(0.55, 0.25, 0.20))[0],
            }
            # The label is what happened later: a draw from the model's own probability.
            churned = "churn" if rng.random() < model.probability(row) else "stay"
            writer.writerow([*(row[name] for name in FEATURES), churned, model.predict(row)])


if __name__ == "__main__":
    main()
