"""A churn model served by FastAPI and monitored by inferwatch's middleware.

Run from the repository root::

    uvicorn examples.fastapi.app:app --port 8000

Monitor settings come from the environment (``INFERWATCH_DB``, ``INFERWATCH_BASELINE``,
``INFERWATCH_SAMPLE_RATE``, and every other ``INFERWATCH_*`` setting); the defaults keep the log
store in the working directory and use the baseline next to this file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from examples.fastapi.model import MODEL_VERSION, ChurnModel, UnknownCategory
from inferwatch import MonitorMiddleware

HERE = Path(__file__).resolve().parent


class Customer(BaseModel):
    tenure_months: Annotated[int, Field(ge=0)]
    monthly_charges: Annotated[float, Field(ge=0)]
    support_calls: Annotated[int, Field(ge=0)]
    contract: str


class PredictRequest(BaseModel):
    instances: Annotated[list[Customer], Field(min_length=1, max_length=1000)]


class PredictResponse(BaseModel):
    predictions: list[str]
    probabilities: list[float]
    model_version: str


model = ChurnModel()
app = FastAPI(title="churn model", version=MODEL_VERSION)


@app.post("/v1/models/churn:predict", response_model=PredictResponse)
def predict(request: PredictRequest) -> PredictResponse | JSONResponse:
    rows = [customer.model_dump() for customer in request.instances]
    try:
        probabilities = [model.probability(row) for row in rows]
    except UnknownCategory as exc:
        # The encoder cannot score this row: a model failure, reported as one (and as a schema
        # anomaly, unseen_categories, by the next drift check).
        return JSONResponse({"error": str(exc)}, status_code=500)
    return PredictResponse(
        predictions=["churn" if p >= model.threshold else "stay" for p in probabilities],
        probabilities=[round(p, 4) for p in probabilities],
        model_version=MODEL_VERSION,
    )


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "model_version": MODEL_VERSION}


# Each value is read from its INFERWATCH_* variable, else this example's default. Strings are
# fine: inferwatch parses and checks them as it does flags, and a bad one stops start-up with a
# line naming the setting. Every other setting (INFERWATCH_WINDOW, alert channels, ...) is read
# from the environment by the middleware itself.
app.add_middleware(
    MonitorMiddleware,
    db=os.environ.get("INFERWATCH_DB") or "churn-monitor.duckdb",
    baseline=os.environ.get("INFERWATCH_BASELINE") or str(HERE / "baseline.json"),
    # Everything is sampled at this example's volume; 0.1 to 0.2 is plenty under real traffic.
    sample_rate=os.environ.get("INFERWATCH_SAMPLE_RATE") or "1.0",
)
