from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inferwatch import MonitorError, Settings
from inferwatch.middleware.settings import parse_duration, parse_size
from tests.conftest import ROOT, free_port, wait_until


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("42", 42.0),
        (2.5, 2.5),
        ("250ms", 0.25),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["999999999999999999999999999999", "36525.1d", 4e9])
def test_durations_beyond_a_datetime_are_refused(text: str | float) -> None:
    # now minus such a window overflows a datetime: a query's 400, never a 500
    with pytest.raises(ValueError, match="longer than 100 years"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512KiB", 524288),
        ("1MiB", 1048576),
        ("2GB", 2_000_000_000),
        ("100", 100),
        (7, 7),
        ("1.5kb", 1500),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_defaults() -> None:
    settings = Settings.load(environ={})
    assert settings.db == "inferwatch.duckdb"
    assert settings.baseline is None
    assert settings.api_prefix == "/monitor"
    assert settings.sample_rate == 1.0


def test_keyword_beats_environment_beats_default() -> None:
    environ = {"INFERWATCH_SAMPLE_RATE": "0.25", "INFERWATCH_WINDOW": "5m"}
    settings = Settings.load({"sample_rate": 0.5}, environ=environ)
    assert settings.sample_rate == 0.5
    assert settings.window == 300.0
    assert settings.check_interval == 60.0


def test_lists_from_the_environment() -> None:
    settings = Settings.load(environ={"INFERWATCH_REDACT": "ssn, password,,"})
    assert settings.redact == ("ssn", "password")


@pytest.mark.parametrize(
    ("values", "environ", "named"),
    [
        ({"sample_rate": 2}, {}, "setting sample_rate"),
        ({}, {"INFERWATCH_WINDOW": "soon"}, "INFERWATCH_WINDOW"),
        ({"max_body_bytes": "1 potato"}, {}, "setting max_body_bytes"),
        ({"api_prefix": "monitor"}, {}, "setting api_prefix"),
        ({"queue_size": 0}, {}, "setting queue_size"),
        ({"port": 70000}, {}, "setting port"),
        ({"no_such_thing": 1}, {}, "'no_such_thing'"),
    ],
)
def test_a_bad_value_names_its_setting(
    values: dict[str, object], environ: dict[str, str], named: str
) -> None:
    with pytest.raises(MonitorError) as info:
        Settings.load(values, environ=environ)
    message = str(info.value)
    assert named in message
    assert "\n" not in message


def test_secrets_are_masked_in_public_view() -> None:
    settings = Settings.load({"admin_token": "hunter2"}, environ={})
    assert settings.public()["admin_token"] == "***"
    assert "hunter2" not in repr(settings.public())


def _uvicorn(lifespan: str, env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.apps.model_app:app", "--host", "127.0.0.1",
             "--port", str(port), "--lifespan", lifespan],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


BAD = [
    ({"INFERWATCH_WINDOW": "5x"}, "INFERWATCH_WINDOW"),
    ({"MODEL_APP_KEYWORDS": '{"sample_rate": 2}'}, "setting sample_rate"),
    ({"MODEL_APP_KEYWORDS": '{"windwo": "1h"}'}, "'windwo'"),
]


@pytest.mark.parametrize("lifespan", ["on", "auto"])
@pytest.mark.parametrize(("env", "named"), BAD)
def test_a_bad_setting_stops_uvicorn_with_one_line(
    tmp_path: Path, lifespan: str, env: dict[str, str], named: str
) -> None:
    log = tmp_path / "uvicorn.log"
    process = _uvicorn(lifespan, {"INFERWATCH_DB": str(tmp_path / "m.duckdb"), **env}, log, 0)
    code = process.wait(60)
    output = log.read_text()
    assert code != 0, output
    errors = [line for line in output.splitlines() if named in line]
    assert len(errors) == 1, output
    assert errors[0].startswith("ERROR:")
    assert "Traceback" not in output
    assert "unsupported" not in output


def test_a_missing_baseline_stops_uvicorn_with_one_line(tmp_path: Path) -> None:
    log = tmp_path / "uvicorn.log"
    env = {"INFERWATCH_DB": str(tmp_path / "m.duckdb"), "INFERWATCH_BASELINE": "missing.json"}
    code = _uvicorn("auto", env, log, 0).wait(60)
    output = log.read_text()
    assert code != 0
    assert "ERROR:    Bad value for setting baseline: cannot read baseline file missing.json" in (
        output
    )
    assert "Traceback" not in output


@contextlib.contextmanager
def _serving(tmp_path: Path, lifespan: str, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "uvicorn.log"
    port = free_port()
    process = _uvicorn(lifespan, env, log, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or _answers(url))
        assert process.poll() is None, log.read_text()
        yield url, log
    finally:
        process.terminate()
        process.wait(30)


def _answers(url: str) -> bool:
    try:
        httpx.get(url + "/monitor/healthz", timeout=1)
    except httpx.TransportError:
        return False
    return True


def test_without_lifespan_a_bad_setting_lets_traffic_through(tmp_path: Path) -> None:
    env = {"INFERWATCH_DB": str(tmp_path / "m.duckdb"), "INFERWATCH_WINDOW": "5x"}
    with _serving(tmp_path, "off", env) as (url, log):
        for _ in range(3):
            answer = httpx.post(url + "/predict", json={"instances": [[1, 2]]}, timeout=10)
            assert answer.status_code == 200
            assert answer.json() == {"predictions": [0.5]}
            assert "x-request-id" not in answer.headers  # nothing of ours touched it
        crash = httpx.post(url + "/fail", timeout=10)
        assert crash.status_code == 503 and crash.json() == {"error": "model exploded"}
        ready = httpx.get(url + "/monitor/readyz", timeout=10)
        assert ready.status_code == 503
        assert "INFERWATCH_WINDOW" in ready.json()["reasons"][0]
        assert httpx.get(url + "/monitor/healthz", timeout=10).status_code == 200
        assert httpx.get(url + "/monitor/health", timeout=10).status_code == 503
        output = log.read_text()
    assert output.count("INFERWATCH_WINDOW") == 1, output
    assert "inferwatch is off, requests pass through" in output
    assert "Traceback" not in output


def test_a_store_that_cannot_open_lets_traffic_through(tmp_path: Path) -> None:
    # A folder that is a file: neither the collector's lock nor the store can be made there.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"INFERWATCH_DB": str(blocker / "m.duckdb")}
    with _serving(tmp_path, "on", env) as (url, log):
        answer = httpx.post(url + "/predict", json={"instances": [[1, 2]]}, timeout=10)
        assert answer.status_code == 200
        ready = httpx.get(url + "/monitor/readyz", timeout=10)
        assert ready.status_code == 503
        reason = ready.json()["reasons"][0]
        assert "the collector cannot start" in reason and "Not a directory" in reason
        output = log.read_text()
    assert output.count("the collector cannot start") == 1, output
    assert "Traceback" not in output


def test_a_collector_that_cannot_open_the_store_says_why(tmp_path: Path) -> None:
    store = tmp_path / "m.duckdb"
    store.write_text("not a DuckDB file\n")
    env = {"INFERWATCH_DB": str(store)}
    with _serving(tmp_path, "on", env) as (url, log):
        answer = httpx.post(url + "/predict", json={"instances": [[1, 2]]}, timeout=10)
        assert answer.status_code == 200
        ready = httpx.get(url + "/monitor/readyz", timeout=10)
        assert ready.status_code == 503
        # The collector runs and says why it cannot write, through every worker.
        reason = ready.json()["reasons"][0]
        assert reason.startswith("the log store is unavailable: Cannot open the log store")
        assert "not a valid DuckDB database file" in reason
        output = log.read_text()
    assert "Traceback" not in output
