"""``inferwatch check --window 7d --against 1d-ago``: long windows from summaries, and a window
against an earlier one, through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from inferwatch.sidecar._cli import main
from tests.conftest import ROOT
from tests.middleware.drift.test_drift import T0, log_rows, open_store
from tests.middleware.summaries.test_summaries import fold_all
from tests.sidecar.test_cli import write_csv


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    write_csv(tmp_path / "train.csv", 4_000)
    out = tmp_path / "baseline.json"
    result = CliRunner().invoke(
        main, ["baseline", "build", str(tmp_path / "train.csv"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def store_of(path: Path, baseline: Path, yesterday: float, today: float) -> str:
    """A store with 2,000 rows of x ~ N(shift, 1) a day before T0 and 2,000 at T0, summarized."""
    from inferwatch.middleware.baseline.build import load_baseline

    con = open_store(path)
    rng = np.random.default_rng(3)
    for shift, start, prefix in ((yesterday, T0 - timedelta(days=1), "y"), (today, T0, "t")):
        columns = {
            "x": rng.normal(shift, 1, 2_000),
            "kind": np.array(["p", "q"])[rng.integers(0, 2, 2_000)],
        }
        log_rows(con, columns, start=start, step_ms=100, prefix=prefix)
    fold_all(con, load_baseline(str(baseline)), T0 - timedelta(days=2))
    con.close()
    return str(path)


def check(db: str, baseline: Path, *extra: str) -> tuple[int, dict]:
    until = (T0 + timedelta(seconds=200)).isoformat() + "Z"
    args = ["check", "--db", db, "--baseline", str(baseline), "--until", until, "--format", "json"]
    done = subprocess.run(
        [sys.executable, "-m", "inferwatch", *args, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize(("today", "code", "drifted"), [(1.0, 0, []), (2.0, 1, ["x"])])
def test_a_window_against_the_day_before(
    tmp_path: Path, baseline: Path, today: float, code: int, drifted: list[str]
) -> None:
    """Both days are off the baseline; against the day before, only a new shift counts."""
    db = store_of(tmp_path / "s.duckdb", baseline, 1.0, today)
    status, report = check(db, baseline, "--window", "200s", "--against", "1d-ago")
    assert (status, report["drifted_features"]) == (code, drifted)
    assert report["against"]["compared"] is True and report["against"]["rows"] == 2_000
    assert report["window"]["source"] == "summaries"
    status, report = check(db, baseline, "--window", "200s")
    assert (status, report["drifted_features"]) == (1, ["x"])


def test_a_week_long_window_adds_up_both_days(tmp_path: Path, baseline: Path) -> None:
    db = store_of(tmp_path / "s.duckdb", baseline, 0.0, 0.0)
    status, report = check(db, baseline, "--window", "7d")
    assert status == 0 and report["window"]["rows"] == 4_000
    assert report["window"]["source"] == "summaries"


@pytest.mark.parametrize("against", ["yesterday", "1d", "0s-ago"])
def test_a_bad_against_is_a_usage_error(tmp_path: Path, baseline: Path, against: str) -> None:
    db = store_of(tmp_path / "s.duckdb", baseline, 0.0, 0.0)
    args = ["check", "--db", db, "--baseline", str(baseline), "--against", against]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--against" in result.output
