"""The example's model: customer churn, a logistic regression with fixed coefficients.

It stands in for a model loaded from a registry; no ML library is needed. The encoder is strict,
as many real pipelines are: a contract type it never saw raises ``UnknownCategory``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["FEATURES", "MODEL_VERSION", "ChurnModel", "UnknownCategory"]

MODEL_VERSION = "churn-2024-06-01"
FEATURES = ("tenure_months", "monthly_charges", "support_calls", "contract")
CONTRACTS = ("month-to-month", "one-year", "two-year")


class UnknownCategory(ValueError):
    """A categorical value the model's encoder was not fitted on."""


class ChurnModel:
    """P(churn) = sigmoid(bias + w . x), with the contract type one-hot encoded."""

    bias = -1.0
    weights = {"tenure_months": -0.05, "monthly_charges": 0.02, "support_calls": 0.35}
    contract_weights = {"month-to-month": 0.9, "one-year": -0.4, "two-year": -1.3}
    threshold = 0.5

    def probability(self, row: Mapping[str, object]) -> float:
        contract = row["contract"]
        if contract not in self.contract_weights:
            raise UnknownCategory(f"unknown contract type {contract!r}")
        logit = self.bias + self.contract_weights[contract]
        for name, weight in self.weights.items():
            logit += weight * float(row[name])  # type: ignore[arg-type]
        return 1.0 / (1.0 + math.exp(-logit))

    def predict(self, row: Mapping[str, object]) -> str:
        return "churn" if self.probability(row) >= self.threshold else "stay"
