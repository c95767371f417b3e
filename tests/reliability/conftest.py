"""Servers the hostile-input and access tests share: started once per session, on 127.0.0.1.

``guarded_sidecar`` is the sidecar with an admin token and a baseline in front of the test model
server (``guarded_upstream``); ``guarded_app`` is the model app with MonitorMiddleware and the
same settings. Tests that use them count what they added (``ModelServer.seen()`` grows), never
assume they are alone.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inferwatch.middleware.baseline.build import build_baseline
from tests.conftest import uvicorn_process
from tests.sidecar.conftest import (
    ModelServer,
    Sidecar,
    bystander,  # noqa: F401 - the fixture, shared with tests/sidecar
    sidecar_process,
    start_model_server,
)

ADMIN_TOKEN = "reliability-admin-token-6b1f"
"""The admin token of the guarded servers."""


def _baseline(folder: Path) -> str:
    """A baseline of ``amount`` (numeric) and ``channel`` (categorical)."""
    rng, source = random.Random(7), folder / "training.jsonl"
    with source.open("w") as out:
        for _ in range(400):
            row = {"amount": rng.gauss(50, 5), "channel": rng.choice(["web", "app"])}
            out.write(json.dumps(row) + "\n")
    build_baseline(str(source), out=str(folder / "baseline.json"))
    return str(folder / "baseline.json")


@pytest.fixture(scope="session")
def guarded_baseline(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _baseline(tmp_path_factory.mktemp("guarded-baseline"))


@pytest.fixture(scope="session")
def guarded_upstream() -> Iterator[ModelServer]:
    server = start_model_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def guarded_sidecar(
    guarded_upstream: ModelServer, guarded_baseline: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sidecar]:
    folder = tmp_path_factory.mktemp("guarded-sidecar")
    flags = ("--admin-token", ADMIN_TOKEN, "--baseline", guarded_baseline, "--min-rows", "5")
    with sidecar_process(guarded_upstream.url, folder, *flags) as running:
        yield running


@dataclass(frozen=True)
class App:
    """A running app: its base URL and its process (the monitor API is under /monitor)."""

    url: str
    pid: int


@pytest.fixture(scope="session")
def guarded_app(guarded_baseline: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The model app of tests/apps with MonitorMiddleware, in a uvicorn process."""
    folder = tmp_path_factory.mktemp("guarded-app")
    env = {
        "INFERWATCH_DB": str(folder / "app.duckdb"),
        "INFERWATCH_ADMIN_TOKEN": ADMIN_TOKEN,
        "INFERWATCH_BASELINE": guarded_baseline,
        "INFERWATCH_MIN_ROWS": "5",
        "INFERWATCH_FLUSH_INTERVAL": "0.1s",
    }
    with uvicorn_process("tests.apps.model_app:app", env=env) as (process, url):
        yield App(url, process.pid)
