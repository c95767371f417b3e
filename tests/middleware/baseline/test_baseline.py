"""Building baselines from files and from the log store, and loading them back."""

from __future__ import annotations

import csv
import json
import math
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import orjson
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
)

from inferwatch.middleware.baseline.build import (
    FORMAT,
    MAX_SIZE,
    Baseline,
    build_baseline,
    load_baseline,
)
from inferwatch.middleware.errors import MonitorError
from inferwatch.middleware.store.database import Store
from tests.apps import yes_no_app
from tests.conftest import uvicorn_process, wait_until
from tests.middleware.conftest import T0, log_rows, open_store, write_parquet


def _copy(source: str, target: Path, options: str = "") -> str:
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM '{source}') TO '{target}' {options}")
    con.close()
    return str(target)


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = load_breast_cancer()
    columns = {str(n): data.data[:, i] for i, n in enumerate(data.feature_names)}
    rule = (data.data[:, 0] < 15).astype(int)  # "mean radius under 15": a weak classifier
    columns |= {"diagnosis": data.target, "predicted": rule}
    tmp = tmp_path_factory.mktemp("cancer")
    return {"columns": columns, "parquet": write_parquet(tmp / "c.parquet", columns), "tmp": tmp}


def test_summaries_are_identical_from_csv_parquet_and_json_lines(cancer: dict[str, Any]) -> None:
    tmp, parquet = cancer["tmp"], cancer["parquet"]
    sources = [
        parquet,
        _copy(parquet, tmp / "c.csv", "(HEADER)"),
        _copy(parquet, tmp / "c.jsonl", "(FORMAT json)"),
    ]
    docs = [build_baseline(s, out=None, label_column="diagnosis") for s in sources]
    for doc in docs[1:]:
        assert doc["features"] == docs[0]["features"]
        assert doc["label"] == docs[0]["label"]
    doc = docs[0]
    assert doc["format"] == FORMAT and doc["rows"] == 569 and doc["bins"] == 20
    radius = doc["features"]["mean radius"]
    assert radius["kind"] == "numeric" and radius["dtype"] == "number"
    assert sum(radius["counts"]) == 569 and len(radius["edges"]) == len(radius["counts"]) + 1
    assert radius["edges"][0] == pytest.approx(6.981) and radius["edges"][-1] == pytest.approx(
        28.11
    )
    assert radius["mean"] == pytest.approx(cancer["columns"]["mean radius"].mean(), rel=1e-6)
    assert radius["std"] == pytest.approx(cancer["columns"]["mean radius"].std(), rel=1e-6)
    assert max(radius["counts"]) - min(radius["counts"]) <= 3  # quantile bins: equal counts
    assert doc["label"]["column"] == "diagnosis" and doc["label"]["kind"] == "categorical"
    assert doc["label"]["values"] == ["1", "0"] and doc["label"]["counts"] == [357, 212]
    assert "diagnosis" not in doc["features"] and doc["quality"] is None


def test_classification_quality_matches_sklearn(cancer: dict[str, Any]) -> None:
    doc = build_baseline(
        cancer["parquet"], out=None, label_column="diagnosis", prediction_column="predicted"
    )
    y, p = cancer["columns"]["diagnosis"], cancer["columns"]["predicted"]
    quality = doc["quality"]
    assert quality["task"] == "classification" and quality["rows"] == 569
    assert quality["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert quality["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    for label in (0, 1):
        entry = quality["per_class"][str(label)]
        assert entry["precision"] == pytest.approx(precision_score(y, p, pos_label=label))
        assert entry["recall"] == pytest.approx(recall_score(y, p, pos_label=label))
    assert doc["predictions"]["predicted"]["column"] == "predicted"  # the name given is kept


def test_regression_quality_matches_sklearn(tmp_path: Path) -> None:
    data = load_diabetes()
    fitted = LinearRegression().fit(data.data[:300], data.target[:300]).predict(data.data)
    columns = {f"x{i}": data.data[:, i] for i in range(10)}
    columns |= {"target": data.target, "fitted": fitted}
    source = write_parquet(tmp_path / "d.parquet", columns)
    doc = build_baseline(source, out=None, label_column="target", prediction_column="fitted")
    quality = doc["quality"]
    assert quality["task"] == "regression" and quality["rows"] == 442
    assert quality["mae"] == pytest.approx(mean_absolute_error(data.target, fitted))
    assert quality["rmse"] == pytest.approx(math.sqrt(mean_squared_error(data.target, fitted)))
    assert quality["r2"] == pytest.approx(r2_score(data.target, fitted))
    assert doc["features"]["x1"]["kind"] == "categorical"  # sex: two values... as floats
    assert doc["features"]["x1"]["dtype"] == "number"


def test_kinds_domains_missing_and_options(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 5_000
    maybe = rng.normal(size=n).astype(object)
    maybe[:500] = None
    columns = {
        "small_int": rng.integers(0, 20, n),  # 20 values: categorical
        "big_int": rng.integers(0, 21, n),  # 21 values: numeric
        "flag": rng.random(n) < 0.25,
        "city": np.array(["Berlin", "Paris", "Rome"])[rng.integers(0, 3, n)],
        "user": np.array([f"user-{i}" for i in rng.integers(0, 400, n)]),
        "maybe": maybe,
        "code": rng.normal(size=n),
        "row_id": np.arange(n),
    }
    source = write_parquet(tmp_path / "k.parquet", columns)
    doc = build_baseline(source, out=None, exclude=["row_id"], categorical=["code"])
    f = doc["features"]
    assert list(f) == doc["columns"] == list(columns)[:-1]
    assert f["small_int"]["kind"] == "categorical" and f["small_int"]["dtype"] == "number"
    assert sorted(f["small_int"]["values"], key=int) == [str(i) for i in range(20)]
    assert f["big_int"]["kind"] == "numeric"
    assert f["flag"]["dtype"] == "boolean" and set(f["flag"]["values"]) == {"true", "false"}
    assert f["city"]["values"] == sorted(
        f["city"]["values"], key=lambda v: -columns["city"].tolist().count(v)
    )
    assert f["city"]["other"] == 0 and f["city"]["distinct"] == 3
    assert len(f["user"]["values"]) == 50 and f["user"]["other"] == n - sum(f["user"]["counts"])
    assert f["user"]["distinct"] == 400
    assert f["maybe"]["missing"] == 500 and f["maybe"]["required"] is False
    assert f["code"]["kind"] == "categorical"  # asked for
    assert f["city"]["required"] is True


def test_a_500_feature_baseline_fits_a_configmap(tmp_path: Path) -> None:
    con = duckdb.connect()
    numeric = ", ".join(f"random() * {i + 1} AS n{i}" for i in range(400))
    text = ", ".join(
        f"'a fairly long category value number ' || CAST(floor(random() * 80) AS INT) AS c{i}"
        for i in range(100)
    )
    con.execute(f"COPY (SELECT {numeric}, {text} FROM range(3000)) TO '{tmp_path}/w.parquet'")
    out = tmp_path / "wide.json"
    doc = build_baseline(str(tmp_path / "w.parquet"), out=str(out))
    assert len(doc["features"]) == 500
    assert out.stat().st_size < 1024 * 1024 and out.stat().st_size <= MAX_SIZE
    loaded = load_baseline(str(out))
    assert loaded.rows == 3000 and len(loaded.features) == 500
    shortened = [e for e in doc["features"].values() if e["kind"] == "categorical"]
    assert all(e["other"] + sum(e["counts"]) == 3000 for e in shortened)


def test_round_trip_and_progress(cancer: dict[str, Any]) -> None:
    lines: list[str] = []
    out = cancer["tmp"] / "round.json"
    doc = build_baseline(cancer["parquet"], out=str(out), progress=lines.append)
    assert any("scan 1/3" in line for line in lines) and any("scan 3/3" in line for line in lines)
    assert lines[-1] == f"writing {out}"
    loaded = load_baseline(str(out))
    assert loaded.path == str(out) and loaded.columns == tuple(doc["columns"])
    assert {n: f.to_json() for n, f in loaded.features.items()} == doc["features"]
    radius = loaded.features["mean radius"]
    assert radius.rows == 569 and radius.bin_counts().sum() == 569


def test_bounded_memory_with_a_small_limit(tmp_path: Path) -> None:
    """300,000 rows by 12 columns summarized within 128 MB of DuckDB memory."""
    con = duckdb.connect()
    numbers = ", ".join(f"random() * {i} AS n{i}" for i in range(10))
    con.execute(
        f"COPY (SELECT {numbers}, 'id-' || i AS ident, CAST(i % 7 AS VARCHAR) AS day "
        f"FROM range(300000) t(i)) TO '{tmp_path}/m.csv' (HEADER)"
    )
    doc = build_baseline(str(tmp_path / "m.csv"), out=None, memory_limit="128MB")
    assert doc["rows"] == 300_000
    assert doc["features"]["ident"]["distinct"] > 250_000
    assert len(doc["features"]["ident"]["values"]) == 50
    assert (
        doc["features"]["day"]["counts"] == [42858] * 6 + [42857]
        or sum(doc["features"]["day"]["counts"]) == 300_000
    )


def test_from_the_log_store_over_a_time_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    columns = {"x": rng.normal(size=2_000), "kind": np.array(["a", "b"])[rng.integers(0, 2, 2_000)]}
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, columns)
    log_rows(con, {"prediction": rng.random(2_000)}, role="output")
    log_rows(con, {"x": rng.normal(50, 1, 500)}, start=end + timedelta(hours=1), prefix="late")
    con.close()
    doc = build_baseline(str(tmp_path / "s.duckdb"), out=None, time_range=(T0, end))
    assert doc["rows"] == 2_000 and set(doc["features"]) == {"x", "kind"}
    assert set(doc["predictions"]) == {"prediction"}
    reference = build_baseline(write_parquet(tmp_path / "r.parquet", columns), out=None)
    assert doc["features"]["x"]["edges"] == reference["features"]["x"]["edges"]
    assert doc["features"]["x"]["counts"] == reference["features"]["x"]["counts"]
    assert doc["features"]["kind"]["counts"] == reference["features"]["kind"]["counts"]
    assert doc["source"]["time_range"] == [T0.isoformat(), end.isoformat()]
    everything = build_baseline(str(tmp_path / "s.duckdb"), out=None)
    assert everything["rows"] == 2_500


def test_bad_sources_raise_monitor_errors(tmp_path: Path, cancer: dict[str, Any]) -> None:
    with pytest.raises(MonitorError, match="not CSV, Parquet, JSON lines"):
        build_baseline(str(tmp_path / "data.xlsx"), out=None)
    with pytest.raises(MonitorError, match="cannot summarize"):
        build_baseline(str(tmp_path / "missing.csv"), out=None)
    with pytest.raises(MonitorError, match="label column 'nope'"):
        build_baseline(cancer["parquet"], out=None, label_column="nope")
    with pytest.raises(MonitorError, match="bins"):
        build_baseline(cancer["parquet"], out=None, bins=1)


def _valid(cancer: dict[str, Any]) -> dict[str, Any]:
    return build_baseline(cancer["parquet"], out=None)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d.update(format="inferwatch-baseline/9"), "format"),
        (lambda d: d.pop("rows"), "rows"),
        (lambda d: d["features"]["mean radius"].update(counts=[1, -2]), "not a count"),
        (lambda d: d["features"]["mean radius"].update(edges=[1.0, 2.0]), "one more than"),
        (lambda d: d["features"]["mean radius"].update(edges=list(range(21))[::-1]), "order"),
        (lambda d: d["features"]["mean radius"].update(kind="text"), "kind"),
        (lambda d: d["features"]["mean radius"].update(method="ks"), "method"),
        (lambda d: d["features"]["mean radius"].update(threshold=-1), "threshold"),
        (lambda d: d.update(features=[]), "features"),
        (lambda d: d.update(drift_share=2), "drift_share"),
        (
            lambda d: d["features"]["mean radius"].update(threshhold=0.2),
            "feature 'mean radius' has an unknown key 'threshhold'",
        ),
        (lambda d: d.update(drift_shares=0.5), "unknown key 'drift_shares'"),
    ],
)
def test_load_rejects_broken_files_with_one_sentence(
    tmp_path: Path, cancer: dict[str, Any], damage: Any, message: str
) -> None:
    doc = _valid(cancer)
    damage(doc)
    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps(doc))
    with pytest.raises(MonitorError, match=message) as caught:
        load_baseline(str(path))
    assert "\n" not in str(caught.value) and caught.value.__cause__ is not None


def test_load_rejects_unreadable_and_non_json_files(tmp_path: Path) -> None:
    with pytest.raises(MonitorError, match="cannot read baseline file"):
        load_baseline(str(tmp_path / "absent.json"))
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(MonitorError, match="not valid JSON"):
        load_baseline(str(tmp_path / "x.json"))
    (tmp_path / "y.json").write_text("[1, 2]")
    with pytest.raises(MonitorError, match="not a JSON object"):
        load_baseline(str(tmp_path / "y.json"))


def test_categorical_features_cannot_use_wasserstein(cancer: dict[str, Any]) -> None:
    doc = build_baseline(cancer["parquet"], out=None)
    doc["features"]["predicted"]["method"] = "wasserstein"
    with pytest.raises(ValueError, match="cannot use method 'wasserstein'"):
        Baseline.from_document(doc)


# ------------------------------------------------- types as served JSON carries them

_PARQUET_TYPES = {
    "x": "DOUBLE", "answer": "VARCHAR", "flag": "VARCHAR", "ok": "BOOLEAN", "zip": "VARCHAR",
    "count": "BIGINT", "day": "VARCHAR", "prediction": "VARCHAR",
}  # fmt: skip


def _reference_rows(n: int = 400) -> list[dict[str, Any]]:
    """Rows as a user's reference data holds them: words, codes with leading zeros, times."""
    rng = random.Random(11)
    rows = []
    for _ in range(n):
        x = round(rng.random(), 4)
        rows.append(
            {
                "x": x,
                "answer": rng.choice(["yes", "no"]),
                "flag": rng.choice(["Y", "N"]),
                "ok": rng.random() < 0.3,
                "zip": f"{rng.randrange(0, 20_000):05d}",
                "count": rng.randrange(0, 5),
                "day": f"2024-01-0{rng.randrange(1, 8)}T00:00:00Z",
                "prediction": yes_no_app.answer(x),
            }
        )
    return rows


def _write_reference(rows: list[dict[str, Any]], folder: Path, kind: str) -> Path:
    jsonl = folder / "reference.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    if kind == "jsonl":
        return jsonl
    if kind == "parquet":
        target = folder / "reference.parquet"
        con = duckdb.connect()
        con.execute(
            f"COPY (SELECT * FROM read_json(?, columns = ?)) TO '{target}' (FORMAT parquet)",
            [str(jsonl), _PARQUET_TYPES],
        )
        con.close()
        return target
    target = folder / "reference.csv"
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(row | {"ok": "true" if row["ok"] else "false"})
    return target


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferwatch", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("kind", "booleans"), [("csv", False), ("csv", True), ("parquet", True), ("jsonl", True)]
)
def test_served_json_of_the_reference_data_shows_no_skew_and_no_drift(
    tmp_path: Path, kind: str, booleans: bool
) -> None:
    """A CSV's text arrives as JSON strings (yes/no, Y/N, true/false, 01234, times); its
    numbers as numbers; booleans only where the file has them or --boolean says so."""
    rows = _reference_rows()
    reference = _write_reference(rows, tmp_path, kind)
    baseline = tmp_path / "baseline.json"
    flags = ["--boolean", "ok"] if kind == "csv" and booleans else []
    built = _cli(
        "baseline", "build", str(reference), "--out", str(baseline),
        "--prediction-column", "prediction", *flags,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    doc = orjson.loads(baseline.read_bytes())
    types = {name: f["dtype"] for name, f in doc["features"].items()}
    assert types == {
        "x": "number", "answer": "string", "flag": "string", "zip": "string",
        "count": "number", "day": "string", "ok": "boolean" if booleans else "string",
    }  # fmt: skip
    assert doc["predictions"]["prediction"]["dtype"] == "string"
    env = {"INFERWATCH_DB": str(tmp_path / "monitor.duckdb"), "INFERWATCH_BASELINE": str(baseline)}
    app = "tests.apps.yes_no_app:app"
    with uvicorn_process(app, env) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(rows), 20):
            served = []
            for row in rows[start : start + 20]:
                row = {k: v for k, v in row.items() if k != "prediction"}
                served.append(row if booleans else row | {"ok": str(row["ok"]).lower()})
            assert client.post("/predict", json={"instances": served}).status_code == 200
        wait_until(
            lambda: client.get("/monitor/health").json()["capture"]["stored"] == len(rows) // 20
        )
        report = client.post("/monitor/drift/check").json()
    assert report["window"]["rows"] == len(rows)
    assert report["schema_anomalies"] == []
    assert report["status"] == "ok"
    assert not report["drift_detected"]
    assert report["prediction"]["prediction"]["drifted"] is False


def test_a_boolean_column_with_other_words_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("x,ok\n1,yes\n2,maybe\n")
    built = _cli(
        "baseline", "build", str(path), "--out", str(tmp_path / "b.json"), "--boolean", "ok"
    )
    assert built.returncode != 0
    assert "the boolean column 'ok' of" in built.stderr
    assert "'maybe'" in built.stderr


def test_a_misspelt_setting_in_a_baseline_file_stops_the_check_naming_it(tmp_path: Path) -> None:
    reference = _write_reference(_reference_rows(50), tmp_path, "csv")
    baseline = tmp_path / "baseline.json"
    assert _cli("baseline", "build", str(reference), "--out", str(baseline)).returncode == 0
    doc = orjson.loads(baseline.read_bytes())
    doc["features"]["x"]["threshhold"] = 0.3
    baseline.write_bytes(orjson.dumps(doc))
    store = tmp_path / "monitor.duckdb"
    Store(str(store)).close()
    checked = _cli("check", "--db", str(store), "--baseline", str(baseline))
    assert checked.returncode == 2
    assert checked.stdout == ""
    (line,) = checked.stderr.strip().splitlines()
    assert "feature 'x' has an unknown key 'threshhold'" in line
