"""The fleet in a local folder: shipping, idempotency, late rows, export --to, check --fleet."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from inferwatch.sidecar._cli import main
from tests.conftest import wait_until
from tests.middleware.fleet.conftest import captures, engine, feed, hours_ago


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too), by relative path, with its bytes."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def check(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["check", "--format", "json", *args])
    assert result.exit_code in (0, 1, 3), result.output
    return result.exit_code, json.loads(result.output)


@pytest.fixture
def fleet(tmp_path: Path, baseline_path: str) -> Path:
    """Three replicas shipped two closed hours each; ``r2``'s ages moved by 30 years."""
    root = tmp_path / "fleet"
    for index, name in enumerate(("r0", "r1", "r2")):
        replica = engine(tmp_path, name, baseline_path, fleet_url=str(root))
        shift = 30.0 if name == "r2" else 0.0
        feed(replica, captures(name, hours_ago(3), 7200, 400, seed=index, age_shift=shift))
        assert replica.fleet is not None
        assert replica.fleet.ship() == 2
        replica.stop()
    return root


def test_each_replica_ships_one_file_per_hour_in_the_hive_layout(fleet: Path) -> None:
    names = sorted(files(fleet))
    assert len(names) == 6
    first = hours_ago(3)
    assert names[0] == (
        f"summaries/model=__HIVE_DEFAULT_PARTITION__/date={first:%Y-%m-%d}/hour={first:%H}/"
        f"replica=r0/summaries-{first:%Y%m%dT%H}.parquet"
    )
    rows = duckdb.sql(
        f"""SELECT replica, count(DISTINCT hour), sum(n) FILTER (what = 'requests'),
                   min(step_s), max(step_s), count(model)
            FROM read_parquet('{fleet}/summaries/*/*/*/*/*.parquet', hive_partitioning = true)
            GROUP BY replica ORDER BY replica"""
    ).fetchall()
    # closed hours are hour totals; the model partition of every request reads back as NULL
    assert rows == [(name, 2, 400, 3600, 3600, 0) for name in ("r0", "r1", "r2")]


def test_check_fleet_merges_the_replicas_as_one_store_of_all_their_rows(
    fleet: Path, tmp_path: Path, baseline_path: str
) -> None:
    whole = engine(tmp_path, "whole", baseline_path)
    for index, name in enumerate(("r0", "r1", "r2")):
        shift = 30.0 if name == "r2" else 0.0
        feed(whole, captures(name, hours_ago(3), 7200, 400, seed=index, age_shift=shift))
    whole.stop()
    until = hours_ago(1).isoformat()
    common = ["--baseline", baseline_path, "--window", "2h", "--until", until]
    status, merged = check("--fleet", str(fleet), *common)
    assert status == 1
    assert merged["drifted_features"] == ["age"]
    assert merged["fleet"]["replicas"] == 3
    assert merged["window"]["rows"] == 3 * 400 * 5
    _, single = check("--db", str(tmp_path / "whole.duckdb"), *common)
    # the store's rows came after its summaries began (their times are past): it reads them raw
    assert single["window"].pop("source") == "rows"
    assert merged["window"].pop("source") == "summaries"
    assert single["window"] == merged["window"]
    for name, entry in single["features"].items():
        assert merged["features"][name]["score"] == pytest.approx(entry["score"], abs=1e-9)
        assert merged["features"][name]["drifted"] == entry["drifted"]
    assert merged["schema_anomalies"] == single["schema_anomalies"]


def test_check_fleet_without_the_drifted_replica_is_ok(fleet: Path, baseline_path: str) -> None:
    for path in fleet.rglob("replica=r2"):
        for file in path.iterdir():
            file.unlink()
    until = hours_ago(1).isoformat()
    result = CliRunner().invoke(
        main,
        ["check", "--fleet", str(fleet), "--baseline", baseline_path, "--window", "2h",
         "--until", until, "--by-replica"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fleet: 2 replicas, 4 files" in result.output
    assert "  replica r1: ok (2000 rows; none drifted)" in result.output
    assert "DRIFT" not in result.output


def test_shipping_again_writes_the_same_bytes_and_late_rows_replace_their_hour(
    tmp_path: Path, baseline_path: str
) -> None:
    root = tmp_path / "fleet"
    replica = engine(tmp_path, "r0", baseline_path, fleet_url=str(root), fleet_raw=1.0)
    feed(replica, captures("r0", hours_ago(3), 7200, 200, seed=1))
    assert replica.fleet is not None
    assert replica.fleet.ship() == 4  # summaries and raw rows of two hours
    shipped = files(root)
    assert replica.fleet.ship() == 0  # nothing grew
    # a new process (a restart) ships its lookback again: the same names, the same bytes
    replica.fleet._shipped.clear()
    assert replica.fleet.ship() == 4
    assert files(root) == shipped
    # a late request for the first hour: that hour's files are written again, whole
    feed(replica, captures("r0", hours_ago(3) + timedelta(minutes=30), 1, 1, seed=99))
    assert replica.fleet.ship() == 2
    after = files(root)
    assert sorted(after) == sorted(shipped)
    changed = sorted(name for name in after if after[name] != shipped[name])
    assert [name.split("/")[0] for name in changed] == ["raw", "summaries"]
    counted = duckdb.sql(
        f"""SELECT hour, sum(n) FROM read_parquet('{root}/summaries/*/*/*/*/*.parquet',
                                                  hive_partitioning = true)
            WHERE what = 'requests' GROUP BY date, hour ORDER BY date, hour"""
    ).fetchall()
    assert [n for _, n in counted] == [101, 100]
    raw = duckdb.sql(f"SELECT count(DISTINCT request_id) FROM '{root}/raw/*/*/*/*/*.parquet'")
    assert raw.fetchall() == [(201,)]
    replica.stop()


def test_export_to_writes_what_the_collector_ships(tmp_path: Path, baseline_path: str) -> None:
    root = tmp_path / "fleet"
    replica = engine(tmp_path, "r0", baseline_path, fleet_url=str(root), fleet_raw=0.5)
    feed(replica, captures("r0", hours_ago(3), 7200, 300, seed=1))
    assert replica.fleet is not None
    replica.fleet.ship()
    replica.stop()
    shipped = files(root)
    exported = tmp_path / "exported"
    result = CliRunner().invoke(
        main,
        ["export", "--db", str(tmp_path / "r0.duckdb"), "--to", str(exported), "--replica",
         "r0", "--fleet-raw", "0.5", "--until", hours_ago(1).isoformat()],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "summaries: 2 files" in result.output
    assert files(exported) == shipped
    raw = duckdb.sql(f"SELECT count(DISTINCT request_id) FROM '{exported}/raw/*/*/*/*/*.parquet'")
    assert 100 < raw.fetchall()[0][0] < 200  # about half the requests, all rows of each


def test_a_failing_storage_is_reported_and_retried_never_raised(
    tmp_path: Path, baseline_path: str
) -> None:
    blocker = tmp_path / "fleet"
    blocker.write_text("a file where the fleet's folder should be")
    replica = engine(
        tmp_path, "r0", baseline_path, fleet_url=str(blocker / "root"), fleet_interval="200ms"
    )
    feed(replica, captures("r0", hours_ago(2), 3600, 50, seed=1))
    assert replica.fleet is not None
    fleet = replica.fleet
    wait_until(lambda: fleet.failures >= 2, 60)
    health = replica.health()["fleet"]
    assert health["failures"] >= 2
    assert health["last_error"].startswith(("NotADirectoryError", "FileExistsError"))
    assert replica.capture_health()["stored"] == 50
    metrics = "".join(str(m) for m in replica.extra_metrics())
    assert "inferwatch_fleet_failures" in metrics
    blocker.unlink()  # the storage is back: the next interval ships
    wait_until(lambda: fleet.shipments > 0, 60)
    assert replica.health()["fleet"]["last_error"] is None
    assert len(files(blocker)) == 1
    replica.stop()


def test_a_temporary_file_left_by_a_killed_shipper_is_never_read_and_goes(
    tmp_path: Path, baseline_path: str
) -> None:
    root = tmp_path / "fleet"
    replica = engine(tmp_path, "r0", baseline_path, fleet_url=str(root))
    feed(replica, captures("r0", hours_ago(2), 3600, 50, seed=1))
    assert replica.fleet is not None
    replica.fleet.ship()
    (shipped,) = files(root)
    folder, name = os.path.split(root / shipped)
    dead = Path(folder) / f".{name}.999999999.tmp"  # no process has that pid
    dead.write_bytes(b"PAR1 half a file")
    found = duckdb.sql(f"SELECT count(*) FROM glob('{root}/summaries/*/*/*/*/*.parquet')")
    assert found.fetchall() == [(1,)]
    feed(replica, captures("r0", hours_ago(2), 3600, 1, seed=2))  # a late row: shipped again
    assert replica.fleet.ship() == 1
    assert list(files(root)) == [shipped]
    replica.stop()


def test_a_window_ending_within_an_hour_counts_its_minutes_only(
    tmp_path: Path, baseline_path: str
) -> None:
    root = tmp_path / "fleet"
    replica = engine(tmp_path, "r0", baseline_path, fleet_url=str(root))
    feed(replica, captures("r0", hours_ago(2), 5400, 540, seed=3, age_shift=8.0))
    assert replica.fleet is not None
    # as shipped at 30 minutes past the later hour: that hour is open, its minutes ship apart
    assert replica.fleet.ship(now=hours_ago(1) + timedelta(minutes=30, seconds=10)) == 2
    replica.fleet = None  # as if it died then: no last shipment makes the hour whole
    replica.stop()
    steps = duckdb.sql(
        f"""SELECT hour, min(step_s), max(step_s)
            FROM read_parquet('{root}/summaries/*/*/*/*/*.parquet', hive_partitioning = true)
            GROUP BY date, hour ORDER BY date, hour"""
    ).fetchall()
    assert [s[1:] for s in steps] == [(3600, 3600), (60, 60)]
    until = (hours_ago(1) + timedelta(minutes=20)).isoformat()
    common = ["--baseline", baseline_path, "--window", "80m", "--until", until]
    _, merged = check("--fleet", str(root), *common)
    _, single = check("--db", str(tmp_path / "r0.duckdb"), *common)
    assert merged["window"]["rows"] == single["window"]["rows"] == 80 * 6 * 5  # 6 a minute
    for name, entry in single["features"].items():
        assert merged["features"][name]["score"] == pytest.approx(entry["score"], abs=1e-9)


def test_replicas_summarizing_another_baseline_are_named_and_left_out(
    tmp_path: Path, baseline_path: str
) -> None:
    from inferwatch.middleware.baseline.build import build_baseline
    from tests.middleware.drift.test_checks import write_training

    write_training(tmp_path / "other.csv", 2_000, seed=5)
    other = str(tmp_path / "other.json")
    build_baseline(str(tmp_path / "other.csv"), out=other, bins=10)
    root = tmp_path / "fleet"
    for name, baseline in (("r0", baseline_path), ("r1", other)):
        replica = engine(tmp_path, name, baseline, fleet_url=str(root))
        feed(replica, captures(name, hours_ago(2), 3600, 200, seed=1))
        replica.stop()
    until = hours_ago(1).isoformat()
    _, report = check("--fleet", str(root), "--baseline", baseline_path, "--window", "1h",
                      "--until", until)  # fmt: skip
    assert report["fleet"]["replica_names"] == ["r0"]
    assert report["fleet"]["other_baselines"] == ["r1"]
    assert report["window"]["rows"] == 200 * 5
