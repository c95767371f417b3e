from __future__ import annotations

import pytest

from middleware import MonitorError, Settings
from middleware._settings import parse_duration, parse_size


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
