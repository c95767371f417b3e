"""The benchmarks' model input and the model app's pieces: a churn model's 10 features, of the
types real records carry, pydantic request and response models, and a small logistic model."""

from __future__ import annotations

import json
import math
import random
from typing import Any

from pydantic import BaseModel, Field

COUNTRIES = ("DE", "FR", "US", "GB", "ES", "IT", "NL", "PL")


# The model app the middleware benchmarks serve: pydantic validation, 10 features, a sync model.


class Record(BaseModel):
    age: int
    income: float
    tenure_months: int
    balance: float
    num_products: int
    credit_score: int
    utilization: float
    is_active: bool
    country: str
    channel: str


class PredictRequest(BaseModel):
    instances: list[Record] = Field(min_length=1, max_length=1_000)


class PredictResponse(BaseModel):
    predictions: list[float]


_COUNTRY_BIAS = {c: (i - 4) * 0.05 for i, c in enumerate(COUNTRIES)}
_CHANNEL_BIAS = {"web": 0.0, "mobile": 0.1, "branch": -0.2, "partner": 0.15}


def churn_probability(r: dict[str, Any]) -> float:
    """A small logistic model over the 10 features of one record."""
    z = (
        -1.2
        + 0.015 * (r["age"] - 45)
        - 0.25 * math.log1p(max(r["income"], 0.0) / 10_000)
        - 0.004 * r["tenure_months"]
        + 0.00001 * r["balance"]
        - 0.3 * (r["num_products"] - 2)
        - 0.003 * (r["credit_score"] - 650)
        + 1.1 * r["utilization"]
        - 0.6 * r["is_active"]
        + _COUNTRY_BIAS.get(r["country"], 0.0)
        + _CHANNEL_BIAS.get(r["channel"], 0.0)
    )
    return round(1.0 / (1.0 + math.exp(-z)), 6)


CHANNELS = ("web", "mobile", "branch", "partner")


def make_record(rng: random.Random) -> dict[str, Any]:
    """One realistic 10-feature record: five ints, three floats, a bool and two categoricals."""
    return {
        "age": rng.randint(18, 90),
        "income": round(rng.lognormvariate(10.5, 0.6), 2),
        "tenure_months": rng.randint(0, 240),
        "balance": round(rng.uniform(-2_000, 60_000), 2),
        "num_products": rng.randint(1, 6),
        "credit_score": rng.randint(300, 850),
        "utilization": round(rng.random(), 4),
        "is_active": rng.random() < 0.7,
        "country": rng.choice(COUNTRIES),
        "channel": rng.choice(CHANNELS),
    }


def make_bodies(count: int, batch: int, seed: int = 7) -> list[bytes]:
    """``count`` distinct ``{"instances": [...]}`` request bodies of ``batch`` records each."""
    rng = random.Random(seed)
    return [
        json.dumps({"instances": [make_record(rng) for _ in range(batch)]}).encode()
        for _ in range(count)
    ]


def make_prediction_bodies(count: int, batch: int, seed: int = 11) -> list[bytes]:
    """``count`` distinct ``{"predictions": [...]}`` response bodies of ``batch`` scores each."""
    rng = random.Random(seed)
    return [
        json.dumps({"predictions": [round(rng.random(), 6) for _ in range(batch)]}).encode()
        for _ in range(count)
    ]
