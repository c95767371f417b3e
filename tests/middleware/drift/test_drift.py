"""The skew check end to end: real DuckDB log stores in the long layout, real baselines.

Shifts that matter are flagged on exactly the features that moved; random splits of the same
data are not; each schema anomaly comes from its own cause and no other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine

from inferwatch.middleware.baseline.build import (
    Baseline,
    FeatureBaseline,
    build_baseline,
    load_baseline,
)
from inferwatch.middleware.drift import report as _drift
from inferwatch.middleware.drift.report import (
    CategoricalWindow,
    NumericWindow,
    evaluate_feature,
    run_check,
)
from inferwatch.middleware.store.database import append_features
from tests.middleware.conftest import T0, log_rows, open_store, write_parquet

CONTRACT_KEYS = {
    "status", "checked_at", "window", "baseline", "drift_detected", "skew_detected",
    "drifted_features", "features", "prediction", "schema_anomalies", "mapping",
}  # fmt: skip


def baseline_of(tmp_path: Path, columns: Mapping[str, Any], name: str = "b", **kw: Any) -> Baseline:
    source = write_parquet(tmp_path / f"{name}.parquet", columns)
    build_baseline(source, out=str(tmp_path / f"{name}.json"), **kw)
    return load_baseline(str(tmp_path / f"{name}.json"))


def check(
    con: duckdb.DuckDBPyConnection,
    baseline: Baseline | None,
    end: datetime,
    rows: int,
    step_ms: float = 1.0,
    **kw: Any,
) -> dict[str, Any]:
    """Check the window holding the last ``rows`` rows before ``end``."""
    return run_check(con.cursor, baseline, window_s=rows * step_ms / 1000, now=end, **kw)


# ---------------------------------------------------------------- data


def generated(n: int, seed: int) -> dict[str, np.ndarray]:
    """Ten features of the shapes real tables have: skewed, heavy-tailed, discrete, sparse."""
    rng = np.random.default_rng(seed)
    optional = rng.normal(5, 2, n).astype(object)
    optional[rng.random(n) < 0.2] = None
    words = np.array([f"w{i:02d}" for i in range(30)])
    zipf = 1 / np.arange(1, 31) ** 1.2
    many = np.array([f"id{i:03d}" for i in range(200)])
    return {
        "normal": rng.normal(50, 10, n),
        "lognormal": rng.lognormal(0, 1, n),
        "uniform": rng.random(n),
        "heavy": rng.standard_t(3, n),
        "count": rng.poisson(3, n),
        "word": words[rng.choice(30, n, p=zipf / zipf.sum())],
        "ident": many[rng.integers(0, 200, n)],
        "flag": rng.random(n) < 0.3,
        "optional": optional,
        "binary": rng.integers(0, 2, n),
    }


def sklearn_frames() -> dict[str, dict[str, np.ndarray]]:
    frames = {}
    for loader in (load_breast_cancer, load_wine, load_diabetes, load_digits):
        data = loader()
        names = list(getattr(data, "feature_names", [])) or [
            f"f{i}" for i in range(data.data.shape[1])
        ]
        frame = {str(n): data.data[:, i] for i, n in enumerate(names)}
        if loader is load_digits:  # pixel intensities 0..16: integer features, categorical
            frame = {n: v.astype(int) for n, v in frame.items()}
        frames[loader.__name__.removeprefix("load_")] = frame
    return frames


def take(columns: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {n: np.asarray(v)[index] for n, v in columns.items()}


# ------------------------------------------------ the decision rule without SQL (many splits)


class Prepared:
    """Columns coded once, so that each random split costs only bincounts and quantiles."""

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        self.numeric: dict[str, np.ndarray] = {}  # NaN marks a missing value
        self.codes: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}  # -1 marks missing
        for name, raw in columns.items():
            values = np.asarray(raw)
            if values.dtype == object and not isinstance(_first(values), str):
                values = np.array([np.nan if v is None else v for v in values], dtype=float)
            if values.dtype.kind == "f":
                self.numeric[name] = values
                continue
            dtype = {"b": "boolean", "i": "number", "u": "number"}.get(values.dtype.kind, "string")
            labels, codes = np.unique(_keys(values), return_inverse=True)
            self.codes[name] = (labels, codes, dtype)
        self.names = list(columns)

    def summarize(self, index: np.ndarray, bins: int = 20) -> dict[str, FeatureBaseline]:
        """What build_baseline infers, in numpy: quantile edges, exact counts, domains."""
        result = {}
        for name, values in self.numeric.items():
            picked = values[index]
            kept = picked[~np.isnan(picked)]
            edges = np.unique(np.quantile(kept, np.linspace(0, 1, bins + 1)))
            counts = np.bincount(
                np.searchsorted(edges[1:-1], kept, "right"), minlength=len(edges) - 1
            )
            result[name] = FeatureBaseline(
                name, "numeric", "number", missing=int(len(picked) - len(kept)),
                edges=tuple(edges), counts=tuple(int(c) for c in counts),
                minimum=edges[0], maximum=edges[-1], mean=float(kept.mean()), std=float(kept.std()),
            )  # fmt: skip
        for name, (labels, codes, dtype) in self.codes.items():
            counts = np.bincount(codes[index], minlength=len(labels))
            order = np.lexsort((labels, -counts))
            order = order[counts[order] > 0][:50]
            result[name] = FeatureBaseline(
                name, "categorical", dtype, values=tuple(labels[order].tolist()),
                counts=tuple(int(c) for c in counts[order]),
                other=int(counts.sum() - counts[order].sum()), distinct=int((counts > 0).sum()),
            )  # fmt: skip
        return result

    def drifted(self, baseline: Mapping[str, FeatureBaseline], index: np.ndarray) -> set[str]:
        return {
            name
            for name, fb in baseline.items()
            if evaluate_feature(fb, *self.windowed(fb, index))[0]["drifted"]
        }

    def windowed(self, fb: FeatureBaseline, index: np.ndarray) -> tuple[int, dict[str, int], Any]:
        """The counts numeric_counts / categorical_counts give, in numpy."""
        if fb.kind == "numeric":
            picked = self.numeric[fb.name][index]
            values = picked[~np.isnan(picked)]
            lo, hi = fb.edges[0], fb.edges[-1]
            inside = values[(values >= lo) & (values <= hi)]
            b = np.searchsorted(np.asarray(fb.edges[1:-1]), inside, "right")
            w = NumericWindow(np.bincount(b, minlength=len(fb.counts)).astype(float))
            w.below, w.above = int((values < lo).sum()), int((values > hi).sum())
            return len(index), {"number": len(values)}, w
        labels, codes, dtype = self.codes[fb.name]
        counts = np.bincount(codes[index], minlength=len(labels))
        position = {v: i for i, v in enumerate(labels.tolist())}
        w = CategoricalWindow(np.array([counts[position[v]] for v in fb.values], dtype=float))
        w.outside = int(counts.sum() - w.counts.sum())
        return len(index), {dtype: int(counts.sum())}, w


def _first(values: np.ndarray) -> Any:
    return next((v for v in values if v is not None), None)


def _keys(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "b":
        return np.where(values, "true", "false")
    return values.astype(str)


def test_random_splits_are_never_flagged_at_any_window_size() -> None:
    """50 random splits at each size from 200 to 200,000 rows, and of each sklearn dataset.

    The baseline is 20,000 other rows of the same data (half of each sklearn dataset): larger
    ones only make the check easier and this test slower.
    """
    rng = np.random.default_rng(2024)
    data = Prepared(generated(220_000, seed=1))
    alarms, splits, feature_alarms, checks = 0, 0, 0, 0
    for size in (200, 2_000, 20_000, 200_000):
        for _ in range(50):
            order = rng.permutation(220_000)
            found = data.drifted(data.summarize(order[size : size + 20_000]), order[:size])
            alarms, splits = alarms + bool(found), splits + 1
            feature_alarms, checks = feature_alarms + len(found), checks + len(data.names)
    for frame in sklearn_frames().values():
        prepared = Prepared(frame)
        n = len(next(iter(frame.values())))
        for _ in range(50):
            order = rng.permutation(n)
            found = prepared.drifted(prepared.summarize(order[n // 2 :]), order[: n // 2])
            alarms, splits = alarms + bool(found), splits + 1
            feature_alarms, checks = feature_alarms + len(found), checks + len(prepared.names)
    assert splits == 400
    assert alarms / splits < 0.01, f"{alarms} of {splits} random splits raised an alarm"
    assert feature_alarms / checks < 0.001


def test_shifts_that_matter_are_flagged_on_exactly_the_moved_features() -> None:
    rng = np.random.default_rng(5)
    for name, frame in sklearn_frames().items():
        n = len(next(iter(frame.values())))
        for _ in range(10):
            order = rng.permutation(n)
            moved = set(rng.choice(list(frame), size=3, replace=False).tolist())
            window = take(frame, order[: n // 2])
            for feature in moved:
                values = window[feature]
                if values.dtype.kind == "f":  # up by one standard deviation, two for tiny data
                    window[feature] = values + values.std() * (1 if n > 400 else 2)
                else:  # 40% of the rows take one new value
                    window[feature] = np.where(rng.random(len(values)) < 0.4, 99, values)
            both = Prepared(
                {f: np.concatenate([frame[f][order[n // 2 :]], window[f]]) for f in frame}
            )
            base = both.summarize(np.arange(n - n // 2))
            assert both.drifted(base, np.arange(n - n // 2, n)) == moved, name


# ---------------------------------------------------------------- end to end, through the store


GENERATED_SQL = """
    CREATE TABLE {table} AS SELECT i,
        50 + 10 * sqrt(-2 * ln(u1)) * cos(2 * pi() * u2) AS "normal",
        exp(sqrt(-2 * ln(u2)) * cos(2 * pi() * u3)) AS "lognormal",
        u3 AS "uniform",
        sqrt(-2 * ln(u1)) * sin(2 * pi() * u2) / sqrt(u4 + 0.01) AS "heavy",
        CAST(floor(u4 * u5 * 12) AS BIGINT) AS "count",
        'w' || lpad(CAST(floor(30 * u5 * u5) AS VARCHAR), 2, '0') AS "word",
        'id' || CAST(floor(u6 * 200) AS BIGINT) AS "ident",
        u6 < 0.3 AS "flag",
        CASE WHEN u7 < 0.2 THEN NULL ELSE 5 + 2 * sqrt(-2 * ln(u1)) * sin(2 * pi() * u3) END
            AS "optional",
        CAST(u7 < 0.5 AS BIGINT) AS "binary"
    FROM (SELECT i, random() + 1e-12 AS u1, random() AS u2, random() AS u3, random() AS u4,
                 random() AS u5, random() AS u6, random() AS u7 FROM range({n}) t(i))
"""


def log_table(
    con: duckdb.DuckDBPyConnection, table: str, *, start: datetime, prefix: str, where: str
) -> datetime:
    """Log the rows of a wide DuckDB table as requests, one row each, in DuckDB itself."""
    described = con.execute(f"DESCRIBE SELECT * FROM {table}").fetchall()
    first, n = con.execute(f"SELECT min(i), count(*) FROM {table} WHERE {where}").fetchone()
    ts = f"$start + to_microseconds(1000 * (i - {first}))"
    for name, sql_type, *_ in described:
        if name == "i":
            continue
        kind = {"VARCHAR": "'string'", "BOOLEAN": "'boolean'"}.get(sql_type, "'number'")
        num = "NULL" if sql_type == "VARCHAR" else f'CAST("{name}" AS DOUBLE)'
        text = f'"{name}"' if sql_type == "VARCHAR" else "NULL"
        append_features(
            con,
            f"SELECT {ts}, $prefix || i, 0, 'input', $name, {kind}, "
            f'{num}, {text} FROM {table} WHERE {where} AND "{name}" IS NOT NULL',
            {"start": start, "prefix": prefix, "name": name},
        )
    return start + timedelta(milliseconds=n)


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Baseline, datetime, datetime]:
    """100,000 baseline rows; 200,000 unchanged window rows, then 200,000 shifted ones."""
    tmp = tmp_path_factory.mktemp("big")
    con = open_store(tmp / "store.duckdb")
    con.execute("PRAGMA disable_checkpoint_on_shutdown")  # a throwaway file: skip writing it out
    con.execute(GENERATED_SQL.format(table="wide", n=500_000))
    reference = "SELECT * EXCLUDE (i) FROM wide WHERE i < 100000"
    con.execute(f"COPY ({reference}) TO '{tmp}/b.parquet' (FORMAT parquet)")
    build_baseline(f"{tmp}/b.parquet", out=str(tmp / "b.json"))
    middle = log_table(con, "wide", start=T0, prefix="r", where="i >= 100000 AND i < 300000")
    con.execute(
        """UPDATE wide SET "normal" = "normal" + 10, "word" = CASE WHEN random() < 0.3
           THEN 'w29' ELSE "word" END WHERE i >= 300000"""
    )
    end = log_table(con, "wide", start=middle, prefix="s", where="i >= 300000")
    return con, load_baseline(str(tmp / "b.json")), middle, end


@pytest.mark.parametrize("size", [200, 2_000, 20_000, 200_000])
def test_end_to_end_unchanged_window_is_ok_and_shift_is_flagged(big_store: Any, size: int) -> None:
    con, baseline, middle, end = big_store
    report = check(con, baseline, middle, size)
    # rows logged around the writer have no outlier scores: those sections say so
    assert set(report) == CONTRACT_KEYS | {"outliers", "multivariate"}
    assert report["multivariate"]["status"] == "insufficient_data"
    assert report["window"]["rows"] == size
    assert report["schema_anomalies"] == []
    assert report["status"] == "ok", report["drifted_features"]
    report = check(con, baseline, end, size)
    assert report["status"] == "alert"
    assert report["drift_detected"] is True and report["skew_detected"] is False
    assert set(report["drifted_features"]) == {"normal", "word"}
    normal, word = report["features"]["normal"], report["features"]["word"]
    assert normal["wasserstein"] == pytest.approx(1.0, abs=0.3)  # moved one standard deviation
    assert word["top_shift"]["value"] == "w29"
    assert word["top_shift"]["current_share"] > word["top_shift"]["baseline_share"] + 0.2


def test_sql_counts_equal_the_numpy_reference(big_store: Any) -> None:
    """What DuckDB bins in the store equals what numpy bins, feature by feature."""
    con, baseline, middle, _ = big_store
    found = con.execute("SELECT * EXCLUDE (i) FROM wide WHERE i >= 280000 AND i < 300000")
    columns = {n: np.asarray(v) for n, v in found.fetchnumpy().items()}
    # fetchnumpy masks NULLs; the reference wants them as None
    raw = con.execute("SELECT optional FROM wide WHERE i >= 280000 AND i < 300000").fetchall()
    columns["optional"] = np.array([v for (v,) in raw], dtype=object)
    data = Prepared(columns)
    report = check(con, baseline, middle, 20_000)
    for name, fb in baseline.features.items():
        expected = evaluate_feature(fb, *data.windowed(fb, np.arange(20_000)))[0]
        got = report["features"][name]
        assert got["score"] == pytest.approx(expected["score"], abs=1e-6), name
        assert got["threshold"] == pytest.approx(expected["threshold"], abs=1e-6), name


# ---------------------------------------------------------------- schema anomalies


def clean(n: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    optional = rng.normal(0, 1, n).astype(object)
    optional[rng.random(n) < 0.1] = None
    return {
        "amount": rng.normal(100, 15, n),
        "color": np.array(["red", "green", "blue"])[rng.integers(0, 3, n)],
        "active": rng.random(n) < 0.6,
        "note": optional,
        "level": rng.integers(0, 5, n),
    }


@pytest.fixture(scope="module")
def small_baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    return baseline_of(tmp_path_factory.mktemp("small"), clean(4_000, seed=1))


def _with(columns: dict[str, Any], name: str, share: float, value: Any, seed: int = 9) -> None:
    rng = np.random.default_rng(seed)
    values = np.asarray(columns[name], dtype=object).copy()
    values[rng.random(len(values)) < share] = value
    columns[name] = values


DEFECTS = {
    "clean": (lambda c: None, set()),
    "missing_feature": (lambda c: c.pop("amount"), {("missing_feature", "amount")}),
    "completeness": (lambda c: _with(c, "note", 0.5, None), {("completeness", "note")}),
    "unexpected_feature": (
        lambda c: c.update(coupon=np.array(["x"] * len(c["amount"]))),
        {("unexpected_feature", "coupon")},
    ),
    "type_mismatch": (lambda c: _with(c, "amount", 0.2, "100"), {("type_mismatch", "amount")}),
    "unseen_categories": (
        lambda c: _with(c, "color", 0.1, "purple"),
        {("unseen_categories", "color")},
    ),
    "out_of_range": (lambda c: _with(c, "amount", 0.05, 1e6), {("out_of_range", "amount")}),
    "non_finite": (lambda c: _with(c, "amount", 0.05, math.nan), {("non_finite", "amount")}),
    "non_finite_code": (lambda c: _with(c, "level", 0.05, math.inf), {("non_finite", "level")}),
    "parse_error": (lambda c: None, {("parse_error", None)}),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_schema_anomaly_comes_from_its_own_cause_only(
    tmp_path: Path, small_baseline: Baseline, defect: str
) -> None:
    columns = clean(2_000, seed=2)
    damage, expected = DEFECTS[defect]
    damage(columns)
    statuses = ["parse_error" if i % 10 == 0 else "ok" for i in range(2_000)]
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, columns, statuses=statuses if defect == "parse_error" else None)
    report = check(con, small_baseline, end, 2_000)
    found = {(a["type"], a["feature"]) for a in report["schema_anomalies"]}
    assert found == expected
    assert report["skew_detected"] is bool(expected)
    for anomaly in report["schema_anomalies"]:
        assert 0 < anomaly["share"] <= 1 and anomaly["detail"]


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_type_counts_taken_from_the_bins_equal_the_type_query(
    tmp_path: Path, small_baseline: Baseline, defect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the bins and categories account for every value but nulls, the check skips the
    query of values per type; the report is the same as with it."""
    columns = clean(2_000, seed=2)
    damage, _ = DEFECTS[defect]
    damage(columns)
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, columns)
    # explicit nulls of a known feature, and outputs the baseline has no section for
    append_features(
        con,
        """SELECT ts, request_id, row_index, role, 'note', 'null', NULL, NULL
           FROM features f WHERE name = 'color' AND NOT EXISTS (
               SELECT 1 FROM features g WHERE g.request_id = f.request_id AND g.name = 'note')""",
    )
    log_rows(con, {"prediction": np.ones(2_000)}, role="output")
    queried = []
    type_counts = _drift.type_counts
    monkeypatch.setattr(_drift, "type_counts", lambda *a: queried.append(1) or type_counts(*a))
    fast = check(con, small_baseline, end, 2_000)
    assert bool(queried) is (defect in ("unexpected_feature", "type_mismatch"))
    monkeypatch.setattr(_drift, "values_per_role", lambda *_: {"input": -1, "output": -1})
    assert check(con, small_baseline, end, 2_000) == fast


def test_noise_alone_raises_no_anomaly_in_small_windows(
    tmp_path: Path, small_baseline: Baseline
) -> None:
    con = open_store(tmp_path / "s.duckdb")
    start = T0
    for seed in range(20):
        start = log_rows(con, clean(200, seed=100 + seed), start=start, prefix=f"w{seed}-")
        report = check(con, small_baseline, start, 200)
        assert report["schema_anomalies"] == [] and report["status"] == "ok", seed


# ---------------------------------------------------------------- statuses and shape


def test_insufficient_data_below_min_rows(tmp_path: Path, small_baseline: Baseline) -> None:
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, clean(150, seed=3))
    report = check(con, small_baseline, end, 150)
    assert report["status"] == "ok" and report["window"]["rows"] == 150
    report = check(con, small_baseline, end, 150, min_rows=151)
    assert report["status"] == "insufficient_data"
    assert report["features"] == {} and report["drift_detected"] is False
    assert set(report) == CONTRACT_KEYS


def test_no_baseline_still_reports_rows_and_parse_errors(tmp_path: Path) -> None:
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, clean(300, seed=4), statuses=["not_json"] * 30 + ["ok"] * 270)
    report = check(con, None, end, 300)
    assert report["status"] == "no_baseline"
    assert report["window"]["rows"] == 300
    assert report["baseline"] == {"path": None, "rows": None}
    assert [a["type"] for a in report["schema_anomalies"]] == ["parse_error"]
    assert report["schema_anomalies"][0]["share"] == pytest.approx(0.1)


def test_report_shape_and_iso_times(tmp_path: Path, small_baseline: Baseline) -> None:
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, clean(500, seed=5))
    report = check(con, small_baseline, end, 500, baseline_path="baseline.json")
    assert report["checked_at"] == "2026-03-01T00:00:00.500000Z"
    assert report["window"] == {
        "start": "2026-03-01T00:00:00Z",
        "end": "2026-03-01T00:00:00.500000Z",
        "rows": 500,
    }
    assert report["baseline"] == {"path": "baseline.json", "rows": 4_000}
    amount, color = report["features"]["amount"], report["features"]["color"]
    common = {"kind", "method", "score", "threshold", "drifted", "rows", "psi"}
    common |= {"missing_share", "baseline_missing_share", "histogram"}
    assert set(amount) == common | {"wasserstein"}
    assert set(color) == common | {"top_shift"}
    histogram = amount["histogram"]
    assert len(histogram["bins"]) == len(histogram["baseline"]) == len(histogram["current"])
    assert histogram["bins"][-4:] == ["below range", "above range", "missing", "invalid"]
    assert sum(histogram["current"]) == amount["rows"]
    assert color["histogram"]["bins"][-4:] == ["<other>", "<unseen>", "<missing>", "<invalid>"]
    assert amount["kind"] == "numeric" and color["kind"] == "categorical"
    assert report["features"]["level"]["kind"] == "categorical"  # five integer values
    assert report["features"]["note"]["baseline_missing_share"] == pytest.approx(0.1, abs=0.02)


def test_names_from_strangers_are_bound_not_formatted(tmp_path: Path) -> None:
    weird = "x'); DROP TABLE features; --\"q"
    columns = {weird: np.random.default_rng(1).normal(size=600), "ok": np.arange(600) % 3}
    baseline = baseline_of(tmp_path, columns)
    assert weird in baseline.features
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, columns | {"new'\"": np.ones(600)})
    report = check(con, baseline, end, 600)
    assert report["features"][weird]["drifted"] is False
    assert [a["feature"] for a in report["schema_anomalies"]] == ["new'\""]
    assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 1_800


def test_cursor_is_closed_after_the_check(tmp_path: Path, small_baseline: Baseline) -> None:
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, clean(200, seed=6))
    cursors = []

    def factory() -> duckdb.DuckDBPyConnection:
        cursors.append(con.cursor())
        return cursors[-1]

    run_check(factory, small_baseline, window_s=0.2, now=end)
    with pytest.raises(duckdb.ConnectionException):
        cursors[0].execute("SELECT 1")


# ---------------------------------------------------------------- predictions and overrides


def test_prediction_drift_is_reported_apart_from_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=3_000)
    baseline = baseline_of(
        tmp_path, {"x": x, "score": 1 / (1 + np.exp(-x))}, prediction_column="score"
    )
    assert set(baseline.predictions) == {"score"} and "score" not in baseline.features
    con = open_store(tmp_path / "s.duckdb")
    window = rng.normal(size=1_000)
    end = log_rows(con, {"x": window})
    # served as {"predictions": [...]}: stored as "prediction", the only output
    log_rows(con, {"prediction": 1 / (1 + np.exp(-(window + 2)))}, role="output")
    report = check(con, baseline, end, 1_000)
    assert report["features"]["x"]["drifted"] is False
    assert report["prediction"]["score"]["drifted"] is True
    assert report["drifted_features"] == ["score"] and report["drift_detected"] is True
    found = report["mapping"]["prediction"]
    assert (found["output"], found["reason"]) == ("prediction", "the only output")
    assert report["schema_anomalies"] == []


@pytest.mark.parametrize(("shift", "drifted"), [(0.0, False), (2.0, True)])
def test_a_probability_vector_prediction_is_compared_by_its_most_likely_class(
    tmp_path: Path, shift: float, drifted: bool
) -> None:
    rng = np.random.default_rng(12)
    x = rng.normal(size=2_000)
    label = np.where(x > 0, "yes", "no")
    baseline = baseline_of(tmp_path, {"x": x, "guess": label}, prediction_column="guess")
    con = open_store(tmp_path / "s.duckdb")
    window = rng.normal(size=500) + shift
    end = log_rows(con, {"x": window})
    p1 = 1 / (1 + np.exp(-window))  # scikit-learn's order: slot 0 is "no", slot 1 "yes"
    log_rows(con, {"proba[0]": 1 - p1, "proba[1]": p1}, role="output")
    report = check(con, baseline, end, 500)
    found = report["mapping"]["prediction"]
    assert (found["output"], found["argmax"], found["classes"]) == ("proba", True, ["no", "yes"])
    assert "compared as classes" in found["reason"]
    entry = report["prediction"]["guess"]
    assert entry["drifted"] is drifted and entry["kind"] == "categorical"
    assert report["schema_anomalies"] == []
    assert report["status"] == ("alert" if drifted else "ok")
    assert ("guess" in report["drifted_features"]) is drifted


def test_a_probability_vector_of_other_classes_is_not_compared(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    x = rng.normal(size=2_000)
    label = np.select([x < -0.5, x > 0.5], ["low", "high"], "mid")
    baseline = baseline_of(tmp_path, {"x": x, "guess": label}, prediction_column="guess")
    con = open_store(tmp_path / "s.duckdb")
    window = rng.normal(size=500)
    end = log_rows(con, {"x": window})
    p1 = 1 / (1 + np.exp(-window))
    log_rows(con, {"proba[0]": 1 - p1, "proba[1]": p1}, role="output")
    report = check(con, baseline, end, 500)
    found = report["mapping"]["prediction"]
    assert found["argmax"] is True and "classes" not in found
    assert found["reason"].endswith("not compared: 2 probabilities per row but 3 classes in the "
                                    "baseline")  # fmt: skip
    assert report["prediction"] == {} and report["status"] == "ok"


def test_no_output_that_is_the_prediction_is_reported_missing(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    x = rng.normal(size=2_000)
    baseline = baseline_of(tmp_path, {"x": x, "score": x * 2}, prediction_column="score")
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, {"x": rng.normal(size=500)})
    log_rows(con, {"a": rng.normal(size=500), "b": rng.normal(size=500)}, role="output")
    report = check(con, baseline, end, 500)
    found = report["mapping"]["prediction"]
    assert found["output"] is None and "Cannot tell" in found["reason"]
    assert [(a["feature"], a["type"]) for a in report["schema_anomalies"]] == [
        ("score", "missing_feature")
    ]


def test_overrides_method_threshold_critical_and_drift_share(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    columns = {f"f{i}": rng.normal(size=4_000) for i in range(4)}
    source = write_parquet(tmp_path / "b.parquet", columns)
    doc = build_baseline(source, out=None)
    doc["features"]["f0"] |= {"method": "psi"}
    doc["features"]["f1"] |= {"method": "wasserstein", "threshold": 0.5}
    doc["features"]["f2"] |= {"critical": True}
    doc["drift_share"] = 0.5
    baseline = Baseline.from_document(doc, "b.json")
    con = open_store(tmp_path / "s.duckdb")
    window = {f"f{i}": rng.normal(size=2_000) for i in range(4)}
    window["f1"] = window["f1"] + 0.3  # a third of a deviation: under the 0.5 set for f1
    window["f2"] = window["f2"] + 1.0
    end = log_rows(con, window)
    report = check(con, baseline, end, 2_000)
    f0, f1, f2 = (report["features"][f"f{i}"] for i in range(3))
    assert f0["method"] == "psi" and f0["threshold"] >= 0.2 and not f0["drifted"]
    assert f1["method"] == "wasserstein" and f1["threshold"] == 0.5 and not f1["drifted"]
    assert f1["score"] == pytest.approx(0.3, abs=0.1)
    assert f2["critical"] is True and f2["drifted"] is True
    assert report["drift_detected"] is True  # one of four is under the share, but critical
    doc["features"]["f2"].pop("critical")
    report = check(con, Baseline.from_document(doc), end, 2_000)
    assert report["drifted_features"] == ["f2"] and report["drift_detected"] is False
