"""Ground truth in: POST /labels bodies, idempotent writes, label files."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest

from inferwatch import Engine, MonitorError, Settings
from inferwatch.middleware.evaluation.label_files import import_label_file
from inferwatch.middleware.evaluation.labels import (
    MAX_ITEMS,
    Label,
    LabelError,
    parse_labels,
    write_labels,
)
from inferwatch.middleware.evaluation.quality import evaluate
from inferwatch.middleware.payload.exchange import Capture
from inferwatch.middleware.store.database import Store
from tests.apps import yes_no_app
from tests.conftest import make_capture, uvicorn_process, wait_until
from tests.middleware.evaluation.conftest import NOW, insert

LATER = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
def store(db_path: str) -> Iterator[Store]:
    opened = Store(db_path)
    yield opened
    opened.close()


def rows(store: Store) -> list[tuple]:
    return store.query(
        "SELECT request_id, row_index, type, num, str, label_ts FROM labels ORDER BY ALL"
    )


# ---------------------------------------------------------------- parsing


def test_a_body_is_a_list_or_one_object_with_index_zero_by_default() -> None:
    body = [
        {"request_id": "a", "label": 1},
        {"request_id": "b", "index": 3, "label": "cat", "timestamp": "2026-03-01T12:00:00+01:00"},
        {"request_id": "c", "index": 2.0, "label": True, "timestamp": 1772366400},
        {"request_id": "d", "label": 0.25, "timestamp": "2026-03-01"},
    ]
    assert parse_labels(orjson.dumps(body)) == [
        Label("a", 0, 1.0),
        Label("b", 3, "cat", datetime(2026, 3, 1, 11, 0)),
        Label("c", 2, True, datetime(2026, 3, 1, 12, 0)),
        Label("d", 0, 0.25, datetime(2026, 3, 1)),
    ]
    assert parse_labels(b'{"request_id": "x", "label": false}') == [Label("x", 0, False)]
    assert parse_labels(b"[]") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[{", "The body is not valid JSON"),
        (b'"labels"', "The body must be a JSON array of label objects."),
        (b'[{"request_id": "a", "label": 1}, 7]', "item 1: must be an object"),
        (b'[{"request_id": "", "label": 1}]', "item 0: 'request_id' must be a non-empty string."),
        (b'[{"label": 1}]', "item 0: 'request_id' must be a non-empty string."),
        (b'[{"request_id": 5, "label": 1}]', "item 0: 'request_id' must be a non-empty string."),
        (
            orjson.dumps([{"request_id": "a" * 129, "label": 1}]),
            "item 0: 'request_id' is longer than 128 characters.",
        ),
        (b'[{"request_id": "a", "index": -1, "label": 1}]', "item 0: 'index' must be a whole"),
        (b'[{"request_id": "a", "index": 1.5, "label": 1}]', "item 0: 'index' must be a whole"),
        (b'[{"request_id": "a", "index": true, "label": 1}]', "item 0: 'index' must be a whole"),
        (b'[{"request_id": "a"}]', "item 0: 'label' is missing."),
        (b'[{"request_id": "a", "label": null}]', "item 0: 'label' must be a number, a string"),
        (b'[{"request_id": "a", "label": [1]}]', "item 0: 'label' must be a number, a string"),
        (b'[{"request_id": "a", "label": 1, "lable": 2}]', "item 0: unknown key 'lable'"),
        (
            b'[{"request_id": "a", "label": 1, "timestamp": "yesterday"}]',
            "item 0: 'timestamp' must be an ISO-8601 time or epoch seconds.",
        ),
        (
            b'[{"request_id": "a", "label": 1, "timestamp": 1772366400000}]',
            "item 0: 'timestamp' 1772366400000 is not epoch seconds (milliseconds by mistake?).",
        ),
    ],
)
def test_a_bad_body_names_its_first_bad_item(body: bytes, message: str) -> None:
    with pytest.raises(LabelError) as raised:
        parse_labels(body)
    assert str(raised.value).startswith(message)
    assert str(raised.value).endswith(".") and str(raised.value).count("\n") == 0
    assert isinstance(raised.value, MonitorError)


def test_the_first_bad_item_is_named_and_nothing_of_the_body_is_written(store: Store) -> None:
    good = [{"request_id": f"r{i}", "label": i} for i in range(3)]
    body = orjson.dumps([*good, {"request_id": "", "label": 1}, {"label": 2}])
    with pytest.raises(LabelError, match=r"^item 3: 'request_id' must be a non-empty string\.$"):
        write_labels(store, parse_labels(body))  # what POST /labels does
    assert store.query("SELECT count(*) FROM labels") == [(0,)]


def test_a_body_holds_at_most_the_cap() -> None:
    body = orjson.dumps([{"request_id": "a", "label": 1}] * (MAX_ITEMS + 1))
    with pytest.raises(LabelError, match="at most 100,000"):
        parse_labels(body)


# ---------------------------------------------------------------- writing


def test_a_label_sent_twice_counts_once_and_a_later_one_replaces_it(store: Store) -> None:
    first = parse_labels(b'[{"request_id": "a", "label": "cat"}, {"request_id": "b", "label": 1}]')
    assert write_labels(store, first) == {"accepted": 2, "matched": 0}
    assert write_labels(store, first) == {"accepted": 2, "matched": 0}
    assert store.query("SELECT count(*) FROM labels") == [(2,)]
    later = parse_labels(b'[{"request_id": "a", "label": "dog", "timestamp": 1772366400}]')
    write_labels(store, later, received_at=LATER)
    assert rows(store) == [
        ("a", 0, "string", None, "dog", datetime(2026, 3, 1, 12, 0)),
        ("b", 0, "number", 1.0, None, None),
    ]
    assert store.query("SELECT received_at FROM labels WHERE request_id = 'a'") == [
        (datetime(2026, 3, 2),)
    ]


def test_within_one_body_the_last_label_of_a_row_wins(store: Store) -> None:
    body = b'[{"request_id": "a", "label": 1}, {"request_id": "a", "index": 0, "label": 2}]'
    assert write_labels(store, parse_labels(body)) == {"accepted": 1, "matched": 0}
    assert rows(store) == [("a", 0, "number", 2.0, None, None)]


def test_labels_of_rows_never_captured_are_counted_not_refused(store: Store) -> None:
    ids = insert(store, {"prediction": [1, 0, 1]})
    labels = [Label(ids[0], 0, 1), Label(ids[1], 0, 0), Label(ids[1], 1, 0), Label("gone", 0, 1)]
    assert write_labels(store, labels) == {"accepted": 4, "matched": 2}
    assert store.query("SELECT count(*) FROM labels") == [(4,)]


def test_a_failed_write_leaves_nothing_behind(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_labels(store, [Label("kept", 0, 1)])
    monkeypatch.setattr(
        "inferwatch.middleware.evaluation.labels._MATCHED", "SELECT count(*) FROM no_such_table"
    )
    with pytest.raises(MonitorError, match=r"^Writing labels failed"):
        write_labels(store, [Label("a", 0, 1), Label("kept", 0, 5)])
    assert rows(store) == [("kept", 0, "number", 1.0, None, None)]


def capture(request_id: str, body: dict, response: dict) -> Capture:
    return make_capture(request_id, json.dumps(body).encode(), json.dumps(response).encode())


def test_a_label_for_row_3_of_a_batch_lands_on_row_3(db_path: str) -> None:
    """Through a running engine: captured by the writer, labelled on the writer thread."""
    engine = Engine(Settings.load({"db": db_path}, environ={}))
    engine.start()
    try:
        instances = [{"x": float(i)} for i in range(5)]
        engine.queue.put(
            capture("batch-1", {"instances": instances}, {"predictions": [10, 11, 12, 13, 14]})
        )
        assert engine.flush()
        body = b'[{"request_id": "batch-1", "index": 3, "label": 13}]'
        result = engine.writer.call(lambda store: write_labels(store, parse_labels(body)))
        assert result.result(timeout=10) == {"accepted": 1, "matched": 1}
        store = engine.writer.store
        assert store is not None
        joined = store.query(
            "SELECT f.row_index, f.num, l.num FROM labels l JOIN features f "
            "USING (request_id, row_index) WHERE f.role = 'output'"
        )
        assert joined == [(3, 13.0, 13.0)]
        cursor = store.cursor()
        try:
            report = evaluate(cursor, window_s=600, min_labels=1)
        finally:
            cursor.close()
        assert report["window"]["predictions"] == 5 and report["window"]["labels"] == 1
        assert report["metrics"]["accuracy"] == 1.0
    finally:
        engine.stop()


# ---------------------------------------------------------------- label files


def write_file(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
def test_a_label_file_is_imported_inside_duckdb(store: Store, tmp_path: Path, kind: str) -> None:
    ids = insert(store, {"prediction": ["cat", "dog", "cat"]}, end=NOW)
    source = tmp_path / "labels.csv"
    write_file(
        source,
        "request_id,index,label,timestamp\n"
        f"{ids[0]},0,cat,2026-03-01T12:00:00+01:00\n"
        f"{ids[1]},0,cat,1772366400\n"
        f"{ids[1]},0,dog,\n"  # a later line for the same row replaces the earlier one
        "00123,2,bird,2026-03-01 10:30:00\n",
    )
    path = str(source)
    if kind != "csv":
        path = str(tmp_path / f"labels.{kind}")
        fmt = "parquet" if kind == "parquet" else "json"
        con = duckdb.connect()
        con.execute(
            f"COPY (SELECT * FROM read_csv('{source}', types={{'request_id': 'VARCHAR', "
            f"'timestamp': 'VARCHAR'}})) TO '{path}' (FORMAT {fmt})"
        )
        con.close()
    said: list[str] = []
    counts = import_label_file(store, path, progress=said.append)
    assert counts == {"accepted": 3, "matched": 2, "unmatched": 1}
    assert said[0] == f"read 4 rows from labels.{kind}"
    assert rows(store) == [
        ("00123", 2, "string", None, "bird", datetime(2026, 3, 1, 10, 30)),
        ("r0", 0, "string", None, "cat", datetime(2026, 3, 1, 11, 0)),
        ("r1", 0, "string", None, "dog", None),
    ]
    assert import_label_file(store, path)["accepted"] == 3  # idempotent
    assert store.query("SELECT count(*) FROM labels") == [(3,)]


def test_label_types_come_from_the_file(store: Store, tmp_path: Path) -> None:
    path = write_file(
        tmp_path / "mixed.jsonl",
        '{"request_id": "a", "label": 1}\n'
        '{"request_id": "b", "row_index": 4, "label": "x"}\n'
        '{"request_id": "c", "label": true, "timestamp": 1772366400}\n',
    )
    assert import_label_file(store, path)["accepted"] == 3
    assert rows(store) == [
        ("a", 0, "number", 1.0, None, None),
        ("b", 4, "string", None, "x", None),
        ("c", 0, "boolean", 1.0, None, datetime(2026, 3, 1, 12, 0)),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("l.csv", "id,label\na,1\n", "l.csv has no 'request_id' column"),
        ("l.csv", "request_id,value\na,1\n", "l.csv has no 'label' column"),
        ("l.csv", "request_id,label\na,1\n,2\n", "l.csv row 2: 'request_id' must be a non-empty"),
        ("l.csv", "request_id,index,label\na,x,1\n", "l.csv row 1: 'index' must be a whole"),
        ("l.csv", "request_id,index,label\na,-2,1\n", "l.csv row 1: 'index' must be a whole"),
        ("l.csv", "request_id,label\na,1\nb,\n", "l.csv row 2: 'label' must be a number"),
        (
            "l.csv",
            "request_id,label,timestamp\na,1,2026-03-01\nb,1,soon\n",
            "l.csv row 2: 'timestamp' must be an ISO-8601 time or epoch seconds.",
        ),
        ("l.xlsx", "whatever", "l.xlsx: not a label file; use .csv, .parquet or .jsonl."),
        ("l.parquet", "not parquet", "Cannot read l.parquet"),
    ],
)
def test_a_bad_label_file_gets_one_clear_error_and_writes_nothing(
    store: Store, tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write_file(tmp_path / name, text)
    with pytest.raises(LabelError) as raised:
        import_label_file(store, path)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
    assert store.query("SELECT count(*) FROM labels") == [(0,)]
    with pytest.raises(LabelError, match=r"nothing\.csv: no such file\."):
        import_label_file(store, str(tmp_path / "nothing.csv"))


# ---------------------------------------------------------------- the command line


def _inferwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferwatch", *args], capture_output=True, text=True, timeout=120
    )


def test_yes_no_labels_from_a_csv_are_scored_against_served_yes_no(tmp_path: Path) -> None:
    """CSV labels yes/no meet served "yes"/"no" as the strings they are: accuracy 0.8."""
    db = str(tmp_path / "monitor.duckdb")
    env = {"INFERWATCH_DB": db}
    rng = random.Random(5)
    xs = [round(rng.random(), 3) for _ in range(100)]
    app = "tests.apps.yes_no_app:app"
    with uvicorn_process(app, env) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        for i, x in enumerate(xs):
            sent = client.post(
                "/predict", json={"instances": [{"x": x}]}, headers={"x-request-id": f"r{i}"}
            )
            assert sent.json() == {"predictions": [yes_no_app.answer(x)]}
        wait_until(lambda: client.get("/monitor/health").json()["capture"]["stored"] == 100)
        before = client.get("/monitor/evaluation").json()
    assert before["status"] == "no_labels"
    assert before["task"] == "classification"  # string predictions, before any label
    truth = [
        yes_no_app.answer(x) if i % 5 else ("no" if x >= 0.5 else "yes") for i, x in enumerate(xs)
    ]
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\n" + "".join(f"r{i},{t}\n" for i, t in enumerate(truth)))
    imported = _inferwatch("labels", "import", str(labels), "--db", db)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("100 labels accepted, 100 matched")
    with uvicorn_process(app, env) as (_, url):
        report = httpx.get(url + "/monitor/evaluation", timeout=30).json()
    assert report["status"] == "ok"
    assert report["task"] == "classification"
    assert report["window"]["labels"] == 100
    assert report["metrics"]["accuracy"] == pytest.approx(0.8)


def test_an_unknown_column_in_a_label_file_is_an_error_naming_it(tmp_path: Path) -> None:
    db = tmp_path / "monitor.duckdb"
    Store(str(db)).close()
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,idx,label\nr0,0,yes\n")
    imported = _inferwatch("labels", "import", str(labels), "--db", str(db))
    assert imported.returncode == 2
    assert imported.stdout == ""
    assert imported.stderr.strip().splitlines() == [
        "Error: labels.csv: unknown column 'idx' (expected request_id, index, label, timestamp)."
    ]
