from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from inferwatch import Engine, Settings
from inferwatch.middleware.errors import MonitorError
from inferwatch.middleware.payload.exchange import Capture
from inferwatch.middleware.store.database import Store
from inferwatch.sidecar._cli import main
from tests.conftest import make_capture, uvicorn_process, wait_until


def capture(ts: float, request_id: str, body: bytes = b'{"a": 1, "b": "x"}') -> Capture:
    return make_capture(request_id, body, ts=ts)


@contextlib.contextmanager
def running(**values: object) -> Iterator[Engine]:
    engine = Engine(Settings.load(values, environ={}))
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


def test_rows_survive_a_restart_and_open_elsewhere(db_path: str) -> None:
    with running(db=db_path) as engine:
        for i in range(10):
            engine.queue.put(capture(time.time(), f"r{i}"))
    with running(db=db_path) as engine:
        engine.queue.put(capture(time.time(), "r10"))
    with duckdb.connect(db_path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM requests").fetchone() == (11,)
        assert con.execute("SELECT count(*) FROM features").fetchone() == (33,)
        assert con.execute(
            "SELECT value FROM inferwatch_meta WHERE key = 'schema_version'"
        ).fetchone() == ("2",)


def test_retention_deletes_old_rows(db_path: str) -> None:
    now = time.time()
    with running(db=db_path, retention="1h") as engine:
        engine.queue.put(capture(now - 7200, "old"))
        engine.queue.put(capture(now, "new"))
        assert engine.flush()
        engine.writer.request_maintenance()
        assert engine.flush()
        assert engine.counters.rows_expired == 3
        store = engine.writer.store
        assert store is not None
        assert store.query("SELECT request_id FROM requests") == [("new",)]
        assert store.query("SELECT DISTINCT request_id FROM features") == [("new",)]


def fill(db_path: str, rows: int, start: float) -> None:
    """Write ``rows`` feature rows straight into a store, one request per row, in time order."""
    ts = (np.arange(rows, dtype=np.int64) * 1000 + int(start * 1e6)).astype("datetime64[us]")
    ids = np.array([f"r{i}" for i in range(rows)], dtype=object)
    requests = {
        "ts": ts,
        "request_id": ids,
        "method": np.full(rows, "POST", dtype=object),
        "route": np.full(rows, "/p", dtype=object),
        "status": np.full(rows, 200, dtype=np.int16),
        **{c: np.zeros(rows) for c in ("latency_ms", "ttfb_ms")},
        **{c: np.zeros(rows, dtype=np.int64) for c in ("request_bytes", "response_bytes")},
        "error": np.full(rows, None, dtype=object),
        **{c: np.full(rows, "ok", dtype=object) for c in ("input_status", "output_status")},
        **{c: np.ones(rows, dtype=np.int32) for c in ("input_rows", "output_rows")},
    }
    features = {
        "ts": ts,
        "request_id": ids,
        "row_index": np.zeros(rows, dtype=np.int32),
        "column_id": np.zeros(rows, dtype=np.int32),  # name index 0, a number, an input
        "num": np.random.default_rng(0).random(rows),
        "str": np.full(rows, None, dtype=object),
    }
    columns = {
        "id": np.zeros(1, dtype=np.int32),
        **{k: np.array([v], dtype=object) for k, v in (("role", "input"), ("name", "x"))},
        "type": np.array(["number"], dtype=object),
    }
    store = Store(db_path)
    store.insert(requests, features, columns)
    store.close()


def test_size_cap_evicts_the_oldest_rows(db_path: str) -> None:
    # DuckDB frees space a row group (122,880 rows) at a time, so this needs a real volume.
    fill(db_path, 600_000, time.time() - 3600)
    cap = 6 * 2**20
    with running(db=db_path, max_db_bytes=cap) as engine:
        store = engine.writer.store
        assert store is not None
        assert store.data_bytes() > cap
        for _ in range(20):
            engine.writer.request_maintenance()
            assert engine.flush()
            if store.data_bytes() <= cap:
                break
        assert store.data_bytes() <= cap
        assert engine.counters.rows_evicted > 0
        left = store.query("SELECT count(*), min(request_id), max(ts) FROM requests")
        assert 0 < left[0][0] < 600_000
        assert store.query("SELECT count(*) FROM requests WHERE request_id = 'r0'") == [(0,)]
        assert store.query("SELECT count(*) FROM requests WHERE request_id = 'r599999'") == [(1,)]


def test_export_writes_parquet_of_a_stopped_store(db_path: str, tmp_path: Path) -> None:
    now = time.time()
    with running(db=db_path) as engine:
        engine.queue.put(capture(now - 3600, "early"))
        engine.queue.put(capture(now, "late"))
    since = (datetime.now(UTC) - timedelta(minutes=30)).replace(tzinfo=None).isoformat()
    out = tmp_path / "export"
    result = CliRunner().invoke(
        main, ["export", "--db", db_path, "--out", str(out), "--since", since]
    )
    assert result.exit_code == 0, result.output
    assert "requests.parquet: 1 rows" in result.output
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT request_id FROM read_parquet(?)", [str(out / "requests.parquet")]
        ).fetchall()
        assert rows == [("late",)]
        assert con.execute(
            "SELECT count(*) FROM read_parquet(?)", [str(out / "features.parquet")]
        ).fetchone() == (3,)


def _one_row_each(db_path: str) -> None:
    """A row in each table the engine has not filled, made from the table's own column types."""
    values = {"TIMESTAMP": "now()::TIMESTAMP", "VARCHAR": "'x'"}
    with duckdb.connect(db_path) as con:
        con.execute("INSERT INTO labels VALUES ('r0', 0, 'number', 1, NULL, NULL, now())")
        for table in (
            "efficiency",
            "resources",
            "drift_reports",
            "row_scores",
            "alerts",
            "alert_deliveries",
        ):
            if con.execute(f"SELECT count(*) FROM {table}").fetchone() != (0,):
                continue
            types = con.execute(
                "SELECT data_type FROM information_schema.columns WHERE table_name = ? "
                "ORDER BY ordinal_position",
                [table],
            ).fetchall()
            row = ", ".join(values.get(t, "1") for (t,) in types)
            con.execute(f"INSERT INTO {table} VALUES ({row})")


def test_export_writes_every_table_or_those_named(db_path: str, tmp_path: Path) -> None:
    with running(db=db_path) as engine:
        engine.queue.put(capture(time.time(), "r0"))
    _one_row_each(db_path)
    tables = [
        "requests", "features", "labels", "efficiency", "resources", "drift_reports",
        "row_scores", "alerts", "alert_deliveries",
    ]  # fmt: skip
    out = tmp_path / "all"
    result = CliRunner().invoke(main, ["export", "--db", db_path, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.parquet" for t in tables)
    with duckdb.connect() as con:
        for table in tables:
            path = str(out / f"{table}.parquet")
            count = con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()
            assert count == ((3,) if table == "features" else (1,)), table
    some = tmp_path / "some"
    result = CliRunner().invoke(
        main, ["export", "--db", db_path, "--out", str(some), "--tables", "labels,alerts"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in some.iterdir()) == ["alerts.parquet", "labels.parquet"]
    result = CliRunner().invoke(
        main, ["export", "--db", db_path, "--out", str(some), "--tables", "labels,secrets"]
    )
    assert result.exit_code == 2
    assert "--tables: no table 'secrets'" in result.output


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MiB filesystem, so that 'disk full' and 'read-only' are the kernel's answers."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_counted_and_recovers(small_disk: Path) -> None:
    db = str(small_disk / "monitor.duckdb")
    with running(db=db, flush_interval=0.01) as engine:
        for i in range(600):
            noise = {f"t{k}": os.urandom(500).hex() for k in range(10)}  # 10 kB, incompressible
            engine.queue.put(capture(time.time(), f"r{i}", json.dumps(noise).encode()))
            if i % 20 == 0:
                engine.flush()
        engine.flush()
        assert engine.counters.write_errors > 0
        assert engine.counters.stored + engine.counters.write_errors == 600
        assert "failed" in (engine.writer.last_error or "")


def test_read_only_file_at_start_is_reported(small_disk: Path) -> None:
    db = str(small_disk / "monitor.duckdb")
    Store(db).close()
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True)
    if remount.returncode != 0:
        pytest.skip("cannot remount read-only here")
    with running(db=db) as engine:
        assert engine.readiness_problems() and "unavailable" in engine.readiness_problems()[0]
        engine.queue.put(capture(time.time(), "r0"))
        engine.flush()
        assert engine.counters.write_errors == 1


def test_kill_during_writes_leaves_a_file_that_opens(db_path: str) -> None:
    script = (
        "import time\n"
        "from inferwatch import Engine, Settings\n"
        "from tests.middleware.store.test_store import capture\n"
        f"engine = Engine(Settings.load({{'db': {db_path!r}, 'flush_interval': 0.01}}))\n"
        "engine.start()\n"
        "i = 0\n"
        "while True:\n"
        "    engine.queue.put(capture(time.time(), f'r{i}')); i += 1\n"
        "    if i % 500 == 0: print(engine.counters.stored, flush=True); time.sleep(0.01)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[3])  # fmt: skip
    assert process.stdout is not None
    # Kill it while it writes: once a few batches have landed and more are queued.
    for line in process.stdout:
        if int(line) >= 2000:
            break
    process.kill()
    process.wait()
    with duckdb.connect(db_path) as con:
        requests = con.execute("SELECT count(*) FROM requests").fetchone()[0]
        features = con.execute("SELECT count(*) FROM features").fetchone()[0]
    assert requests >= 2000
    assert features == 3 * requests  # batches are transactions: never half a request


def test_export_from_a_running_app_needs_the_token(db_path: str, tmp_path: Path) -> None:
    env = {"INFERWATCH_DB": db_path, "INFERWATCH_ADMIN_TOKEN": "s3cret"}
    with uvicorn_process("tests.apps.model_app:app", env) as (_, url):
        for _ in range(3):
            httpx.post(url + "/predict", json={"instances": [{"a": 1}, {"a": 2}]})
        assert httpx.get(url + "/monitor/export/features.parquet").status_code == 401
        wrong = httpx.get(url + "/monitor/export/features.parquet",
                          headers={"Authorization": "Bearer nope"})  # fmt: skip
        assert wrong.status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        wait_until(lambda: httpx.get(url + "/monitor/health").json()["capture"]["stored"] == 3)
        response = httpx.get(url + "/monitor/export/features.parquet", headers=auth)
        assert response.status_code == 200
        assert httpx.get(url + "/monitor/export/secrets.parquet", headers=auth).status_code == 404
        bad = httpx.get(url + "/monitor/export/features.parquet?since=yesterday", headers=auth)
        assert bad.status_code == 400
    out = tmp_path / "f.parquet"
    out.write_bytes(response.content)
    with duckdb.connect() as con:
        rows = con.execute("SELECT role, count(*) FROM read_parquet(?) GROUP BY role ORDER BY 1",
                           [str(out)]).fetchall()  # fmt: skip
    assert rows == [("input", 6), ("output", 6)]


_SCHEMA_1_FEATURES = """
CREATE TABLE features (
    ts TIMESTAMP NOT NULL, request_id VARCHAR NOT NULL, row_index INTEGER NOT NULL,
    role VARCHAR NOT NULL, name VARCHAR NOT NULL, type VARCHAR NOT NULL, num DOUBLE, str VARCHAR
)
"""


def test_a_store_of_the_first_schema_is_moved_over_intact(db_path: str) -> None:
    old_rows = [
        ("r1", 0, "input", "a", "number", 1.5, None),
        ("r1", 0, "input", "b", "string", None, "x'; DROP TABLE requests; --"),
        ("r1", 1, "input", "a", "number", float("nan"), None),
        ("r2", 0, "input", "a", "string", None, "oops"),
        ("r2", 0, "input", "flag", "boolean", 1.0, None),
        ("r2", 0, "input", "gone", "null", None, None),
        ("r2", 0, "output", "prediction", "number", 0.25, None),
        ("r2", 0, "output", "a", "number", 7.0, None),
    ]
    with duckdb.connect(db_path) as con:
        con.execute(_SCHEMA_1_FEATURES)
        con.execute("CREATE TABLE inferwatch_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute("INSERT INTO inferwatch_meta VALUES ('schema_version', '1')")
        con.executemany(
            "INSERT INTO features VALUES (TIMESTAMP '2026-11-27 10:00:00', ?, ?, ?, ?, ?, ?, ?)",
            old_rows,
        )
    now = time.time()
    with running(db=db_path, retention="3650d") as engine:
        engine.queue.put(capture(now, "r3", b'{"a": 2, "new": true}'))
    with duckdb.connect(db_path, read_only=True) as con:
        moved = con.execute(
            "SELECT request_id, row_index, role, name, type, num, str FROM features "
            "WHERE request_id <> 'r3' ORDER BY request_id, row_index, role, name, type"
        ).fetchall()
        kinds = con.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_name LIKE 'feature%' ORDER BY 1"
        ).fetchall()
        version = con.execute(
            "SELECT value FROM inferwatch_meta WHERE key = 'schema_version'"
        ).fetchone()
        columns = con.execute("SELECT id, role, name, type FROM feature_columns").fetchall()
        new = con.execute(
            "SELECT name, type, num FROM features WHERE request_id = 'r3' ORDER BY name"
        ).fetchall()

    def key(row: tuple[object, ...]) -> tuple[object, ...]:
        num = row[5]
        return (*row[:5], "nan" if isinstance(num, float) and num != num else num, row[6])

    assert sorted(map(key, moved)) == sorted(map(key, old_rows))
    assert kinds == [
        ("feature_columns", "BASE TABLE"),
        ("feature_values", "BASE TABLE"),
        ("features", "VIEW"),
    ]
    assert version == ("2",)
    assert new == [("a", "number", 2.0), ("new", "boolean", 1.0), ("prediction", "number", 1.0)]
    # one id per (role, name, type), and one name index per name whatever its role or type
    assert len({c[0] for c in columns}) == len(columns) == len({c[1:] for c in columns})
    index = {}
    for column_id, _, name, _ in columns:
        assert index.setdefault(name, column_id >> 3) == column_id >> 3
    assert len(set(index.values())) == len(index)


def test_a_store_of_the_first_schema_read_only_says_how_to_move_it(db_path: str) -> None:
    with duckdb.connect(db_path) as con:
        con.execute(_SCHEMA_1_FEATURES)
    with pytest.raises(MonitorError, match=r"first schema: open it once for writing"):
        Store(db_path, read_only=True)
    Store(db_path).close()  # moved over
    Store(db_path, read_only=True).close()
