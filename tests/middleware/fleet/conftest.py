"""Replicas for the fleet tests: real engines and stores fed captures with chosen times."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inferwatch import Settings
from inferwatch.middleware.baseline.build import build_baseline
from inferwatch.middleware.engine.engine import Engine
from tests.conftest import make_capture
from tests.middleware.drift.test_checks import write_training


def this_hour() -> datetime:
    """The current hour, UTC, as the store's naive timestamps are."""
    return datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)


def bodies(requests: int, seed: int, *, age_shift: float = 0.0) -> Iterator[bytes]:
    """Request bodies of 5 instances each, like the training data (``age`` moved by a shift)."""
    rng = random.Random(seed)
    for _ in range(requests):
        rows = [
            {"age": rng.gauss(40 + age_shift, 10), "income": rng.gauss(50_000, 8_000),
             "plan": rng.choice("abc")}
            for _ in range(5)
        ]  # fmt: skip
        yield json.dumps({"instances": rows}).encode()


def captures(
    replica: str, start: datetime, span_s: float, requests: int, seed: int, age_shift: float = 0.0
) -> list[Any]:
    """Captures of POST /predict spread evenly over ``span_s`` seconds from ``start``."""
    first = start.replace(tzinfo=UTC).timestamp()
    return [
        make_capture(f"{replica}-{seed}-{i}", body, ts=first + i * span_s / requests)
        for i, body in enumerate(bodies(requests, seed, age_shift=age_shift))
    ]


@pytest.fixture(scope="session")
def baseline_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("baseline")
    write_training(folder / "train.csv", 5_000)
    out = folder / "baseline.json"
    build_baseline(str(folder / "train.csv"), out=str(out))
    return str(out)


def engine(folder: Path, name: str, baseline: str, **values: Any) -> Engine:
    """A started engine with its own store in ``folder``; checks stay out of the way."""
    settings = Settings.load(
        {
            "db": str(folder / f"{name}.duckdb"),
            "baseline": baseline,
            "replica": name,
            "check_interval": "1h",
            "fleet_interval": "1h",
            "fleet_lookback": "6h",
            **values,
        }
    )
    started = Engine(settings)
    started.start()
    return started


def feed(target: Engine, items: list[Any]) -> None:
    """Hand captures to the engine's writer as the middleware does, and wait until written."""
    for start in range(0, len(items), 2_000):  # within the queue's 10,000: none dropped
        for item in items[start : start + 2_000]:
            assert target.queue.put(item)
        assert target.flush(60)


def hours_ago(count: int) -> datetime:
    return this_hour() - timedelta(hours=count)
