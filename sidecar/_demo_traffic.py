"""The demo's traffic: a day in the life of a model, compressed into a few phases.

Each phase sends batches of real rows (the held-out half of the data set) through the sidecar and
changes them the way production does: a population that drifts, an upstream release that renames
a field and sends a number as text, an outage that sends nulls, and a change in what the right
answer is, which only the late labels reveal.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["PHASES", "Phase", "PhaseResult", "play_phase"]

Row = dict[str, Any]


def _normal(row: Row, rng: random.Random) -> Row:
    return row


def _drifted(row: Row, rng: random.Random) -> Row:
    # A new imaging device reads sizes a quarter larger: the covariate shift moves predictions.
    out = dict(row)
    for name in ("mean_radius", "mean_perimeter", "mean_area", "worst_radius", "worst_area"):
        out[name] = row[name] * 1.25
    return out


def _schema_break(row: Row, rng: random.Random) -> Row:
    # An upstream release renames a field and serializes a number as text.
    out = dict(row)
    out["texture_mean"] = out.pop("mean_texture")
    out["mean_smoothness"] = str(row["mean_smoothness"])
    return out


def _outage(row: Row, rng: random.Random) -> Row:
    # A feature store outage sends nulls for a share of requests; the model fails on them.
    if rng.random() < 0.5:
        return {**row, "worst_area": None}
    return row


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    says: str
    change: Callable[[Row, random.Random], Row]
    flip_labels: float = 0.0  # share of ground truth that the changed concept turns over


PHASES: tuple[Phase, ...] = (
    Phase("normal", "normal traffic", _normal),
    Phase("drift", "a new imaging device: sizes read 25% larger", _drifted),
    Phase("schema", "a release upstream: mean_texture renamed, a number as text", _schema_break),
    Phase("errors", "a feature store outage: nulls make the model fail", _outage),
    Phase("concept", "the concept changes: same inputs, other diagnoses", _normal, flip_labels=0.4),
)  # fmt: skip


@dataclass(slots=True)
class PhaseResult:
    phase: Phase
    requests: int = 0
    errors: int = 0
    labels: list[dict[str, Any]] = field(default_factory=list)


def play_phase(
    client: httpx.Client,
    phase: Phase,
    pool: list[tuple[Row, str]],
    *,
    seconds: float,
    rate: float,
    path: str,
    rng: random.Random,
) -> PhaseResult:
    """Send batches for ``seconds`` at about ``rate`` requests per second; keep the truth."""
    result = PhaseResult(phase)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        batch = [rng.choice(pool) for _ in range(rng.randint(1, 4))]
        body = {"instances": [phase.change(row, rng) for row, _ in batch]}
        try:
            response = client.post(path, json=body)
        except httpx.HTTPError:
            response = None
        result.requests += 1
        if response is None or response.status_code >= 500:
            result.errors += 1
        else:
            request_id = response.headers.get("x-request-id")
            for index, (_, truth) in enumerate(batch):
                if rng.random() < phase.flip_labels:
                    truth = "benign" if truth == "malignant" else "malignant"
                result.labels.append({"request_id": request_id, "index": index, "label": truth})
        time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
    return result
