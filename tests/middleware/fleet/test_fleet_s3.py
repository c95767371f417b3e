"""Eight collectors, each with its own store, shipping to one bucket of a real S3 server.

Each replica is a real ``inferwatch collector`` process fed by a worker's
:class:`CollectorChannel`, the path MonitorMiddleware hands its captures over; the captures carry
times hours back, so that their hours are closed and shipped without waiting for the clock.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from inferwatch import Settings
from inferwatch.middleware.collector.channel import CollectorChannel
from inferwatch.middleware.engine.engine import Engine
from tests.conftest import ROOT, make_capture, wait_until
from tests.middleware.fleet.conftest import captures, engine, feed, hours_ago
from tests.middleware.fleet.s3 import Collector, S3Server, s3_server, start_collector

REPLICAS = 8
REQUESTS = 300  # per replica and scenario, 5 rows each


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


def hand_over(db: str, items: list) -> None:
    """Captures through a worker's channel to the collector of ``db``, until it wrote them."""
    channel = CollectorChannel(Settings.load({"db": db, "collector_autostart": False}))
    channel.start()
    for item in items:
        channel.put(tuple(item))
    assert channel.stop(timeout=120), "the collector did not confirm the captures written"


def shipped_after_writes(collector: Collector, stored: int) -> None:
    """Wait until the collector has stored ``stored`` captures and shipped twice since."""
    wait_until(lambda: collector.health()["capture"]["stored"] >= stored, 120)
    before = collector.health()["fleet"]["shipments"]
    wait_until(lambda: collector.health()["fleet"]["shipments"] >= before + 2, 120)


def check_fleet(s3: S3Server, url: str, baseline: str, until: str) -> tuple[int, dict]:
    command = [sys.executable, "-m", "inferwatch", "check", "--fleet", url, "--baseline", baseline,
               "--window", "2h", "--until", until, "--format", "json", "--by-replica"]  # fmt: skip
    env = {**os.environ, **s3.env(), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr.decode()
    return done.returncode, json.loads(done.stdout)


def test_check_fleet_finds_the_drift_of_two_replicas_of_eight(
    s3: S3Server, tmp_path: Path, baseline_path: str
) -> None:
    url = "s3://fleet/eight"
    settings = {"baseline": baseline_path, "fleet_url": url, "fleet_interval": "1s",
                "fleet_lookback": "8h"}  # fmt: skip
    collectors = [
        start_collector(
            str(tmp_path / f"r{i}.duckdb"), s3, tmp_path / f"r{i}.log", replica=f"r{i}", **settings
        )
        for i in range(REPLICAS)
    ]
    try:
        for i, collector in enumerate(collectors):
            calm = captures(f"r{i}", hours_ago(6), 7200, REQUESTS, seed=i)
            # two of eight replicas see ages 30 years older in the later two hours
            shift = 30.0 if i in (2, 5) else 0.0
            moved = captures(f"r{i}", hours_ago(3), 7200, REQUESTS, seed=100 + i, age_shift=shift)
            hand_over(collector.db, calm + moved)
        for collector in collectors:
            shipped_after_writes(collector, 2 * REQUESTS)
            assert collector.health()["fleet"]["last_error"] is None
    finally:
        for collector in collectors:
            collector.stop()
    listed = s3.fs().find("fleet/eight/summaries")
    assert len(listed) == REPLICAS * 4  # two hours of each scenario per replica
    status, calm = check_fleet(s3, url, baseline_path, hours_ago(4).isoformat())
    assert status == 0, calm
    assert calm["fleet"]["replicas"] == REPLICAS
    assert calm["window"]["rows"] == REPLICAS * REQUESTS * 5
    assert calm["drifted_features"] == []
    assert [own["status"] for own in calm["fleet"]["by_replica"].values()] == ["ok"] * REPLICAS
    status, moved = check_fleet(s3, url, baseline_path, hours_ago(1).isoformat())
    assert status == 1
    assert moved["fleet"]["replicas"] == REPLICAS
    assert moved["window"]["rows"] == REPLICAS * REQUESTS * 5
    assert moved["drifted_features"] == ["age"]
    assert not moved["features"]["income"]["drifted"]
    by_replica = moved["fleet"]["by_replica"]
    assert sorted(by_replica) == [f"r{i}" for i in range(REPLICAS)]
    assert {name for name, own in by_replica.items() if own["drifted_features"]} == {"r2", "r5"}
    assert by_replica["r2"]["drifted_features"] == ["age"]
    assert all(own["rows"] == REQUESTS * 5 for own in by_replica.values())


def big_store(folder: Path, baseline: str) -> tuple[str, int]:
    """A store of one closed hour of wide requests: its raw rows make a file of tens of MB."""
    rng = random.Random(7)
    first = hours_ago(2).replace(tzinfo=UTC).timestamp()
    items = []
    for i in range(5_000):
        rows = [{f"x{k}": rng.random() for k in range(10)} for _ in range(40)]
        body = json.dumps({"instances": rows}).encode()
        items.append(make_capture(f"big-{i}", body, ts=first + i * 0.7))
    writer: Engine = engine(folder, "big", baseline)
    feed(writer, items)
    writer.stop()
    return str(folder / "big.duckdb"), len(items)


def test_kill_9_mid_ship_leaves_no_partial_file_visible(
    s3: S3Server, tmp_path: Path, baseline_path: str
) -> None:
    db, requests = big_store(tmp_path, baseline_path)
    url = "s3://fleet/killed"
    settings = {"baseline": baseline_path, "fleet_url": url, "fleet_interval": "1s",
                "fleet_lookback": "4h", "fleet_raw": "1", "replica": "big"}  # fmt: skip
    fs = s3.fs()
    caught = 0
    for attempt in range(5):
        log = tmp_path / f"collector-{attempt}.log"
        collector = start_collector(db, s3, log, **settings)
        wait_until(lambda log=log: "inferwatch: shipping" in log.read_text(), 120)
        collector.kill()  # as soon as the upload of the big file has begun
        fs.invalidate_cache()
        listed = fs.find("fleet/killed")
        for path in listed:  # whatever is visible is whole
            with fs.open(path, "rb") as handle:
                assert pq.read_table(handle).num_rows > 0
        caught += not any(path.split("/")[2] == "raw" for path in listed)
        if caught:
            break
    assert caught, "every kill came after the upload had finished"
    collector = start_collector(db, s3, tmp_path / "collector-last.log", **settings)
    try:
        wait_until(lambda: collector.health()["fleet"]["shipments"] >= 1, 120)
    finally:
        collector.stop()
    fs.invalidate_cache()
    (raw,) = fs.find("fleet/killed/raw")
    with fs.open(raw, "rb") as handle:
        table = pq.read_table(handle, columns=["request_id"])
    assert len(set(table.column("request_id").to_pylist())) == requests


def test_export_to_s3_writes_the_bytes_export_to_a_folder_writes(
    s3: S3Server, tmp_path: Path, baseline_path: str
) -> None:
    writer = engine(tmp_path, "r9", baseline_path)
    feed(writer, captures("r9", hours_ago(3), 7200, 200, seed=9))
    writer.stop()
    env = {**os.environ, **s3.env(), "PYTHONPATH": str(ROOT)}
    until = hours_ago(1).isoformat()
    for target in ("s3://fleet/exported", str(tmp_path / "exported")):
        db = str(tmp_path / "r9.duckdb")
        command = [sys.executable, "-m", "inferwatch", "export", "--db", db,
                   "--to", target, "--replica", "r9", "--until", until]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
    fs = s3.fs()
    local = sorted((tmp_path / "exported").rglob("*.parquet"))
    assert len(local) == 2
    for path in local:
        relative = path.relative_to(tmp_path / "exported").as_posix()
        assert fs.cat_file(f"fleet/exported/{relative}") == path.read_bytes()
