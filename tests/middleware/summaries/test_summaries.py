"""Summaries: checks over them equal checks over raw rows; the writer folds every batch; rollup,
expiry and the category cap keep what checks need; windows against earlier windows."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pytest

from inferwatch.middleware.baseline.build import Baseline, build_baseline, load_baseline
from inferwatch.middleware.drift.report import run_check
from inferwatch.middleware.drift.summary_check import check_merged, check_window, parse_against
from inferwatch.middleware.summaries.fold import fold_span
from inferwatch.middleware.summaries.retention import maintain_summaries
from inferwatch.middleware.summaries.spec import MAX_CATEGORIES, summary_spec
from inferwatch.middleware.summaries.window import SummaryFigures, merge_summaries, store_figures
from tests.apps.model_app import build_app
from tests.conftest import in_process
from tests.middleware.drift.test_checks import instances, post_all, write_training
from tests.middleware.drift.test_drift import (
    DEFECTS,
    T0,
    baseline_of,
    clean,
    generated,
    log_rows,
    open_store,
)

STEP_MS = 100.0  # 3,000 rows span five minutes


def fold_all(con: duckdb.DuckDBPyConnection, baseline: Baseline | None, since: datetime) -> None:
    """Summaries of every stored row, as the writer makes them, folded under ``baseline``."""
    spec = summary_spec(baseline)
    sql, params = fold_span(spec, [(datetime(2000, 1, 1), datetime(2100, 1, 1))])
    con.execute(f"INSERT INTO summaries {sql}", params)
    con.execute("INSERT INTO summary_baselines VALUES ('', ?, ?)", [spec.digest, since])


def both(
    con: duckdb.DuckDBPyConnection, baseline: Baseline, now: datetime, window_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw-row check and the summary check of the same window."""
    raw = run_check(con.cursor, baseline, window_s=window_s, now=now)
    summed = check_window(con.cursor, baseline, model=None, window_s=window_s, now=now, align=False)
    assert summed["window"].pop("source") == "summaries"
    return raw, summed


def assert_same(raw: Any, summed: Any, path: str = "") -> None:
    """Equal, with numbers equal to 1e-9 (sums of squares to 12 digits)."""
    if isinstance(raw, dict):
        assert set(raw) == set(summed), path
        for key in raw:
            assert_same(raw[key], summed[key], f"{path}.{key}")
    elif isinstance(raw, list):
        assert len(raw) == len(summed), path
        for i, (a, b) in enumerate(zip(raw, summed, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(raw, float) and not isinstance(raw, bool):
        assert math.isclose(raw, summed, rel_tol=1e-12, abs_tol=1e-9), (path, raw, summed)
    else:
        assert raw == summed, (path, raw, summed)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    return baseline_of(tmp_path_factory.mktemp("small"), clean(4_000, seed=1))


def _drifted(columns: dict[str, Any]) -> None:
    columns["amount"] = np.asarray(columns["amount"]) + 30
    colors = np.asarray(columns["color"]).copy()
    colors[: len(colors) // 2] = "red"
    columns["color"] = colors


CASES = {**{k: v[0] for k, v in DEFECTS.items()}, "drift": _drifted}


@pytest.mark.parametrize("case", list(CASES))
def test_summary_checks_equal_raw_checks(tmp_path: Path, small: Baseline, case: str) -> None:
    """Scores, drifted features and anomalies: the same from summaries as from raw rows, with
    window edges inside minutes and outputs beside the inputs."""
    columns = clean(3_000, seed=2)
    CASES[case](columns)
    statuses = ["parse_error" if i % 10 == 0 else "ok" for i in range(3_000)]
    con = open_store(tmp_path / "s.duckdb")
    start = T0 + timedelta(seconds=7)
    end = log_rows(
        con,
        columns,
        start=start,
        step_ms=STEP_MS,
        statuses=statuses if case == "parse_error" else None,
    )
    prediction = np.random.default_rng(3).normal(size=3_000)
    log_rows(con, {"prediction": prediction}, start=start, step_ms=STEP_MS, role="output")
    fold_all(con, small, T0)
    for now, window_s in ((end - timedelta(seconds=3.3), 250.7), (end, 300.0)):
        raw, summed = both(con, small, now, window_s)
        assert raw["window"]["rows"] > 2_000
        assert_same(raw, summed)
    expected = {"drift": True, "clean": False}.get(case)
    if expected is not None:
        assert raw["drift_detected"] is expected
        assert ("amount" in raw["drifted_features"]) is expected


def test_prediction_and_many_features_equal_on_real_shapes(tmp_path: Path) -> None:
    """Skewed, heavy-tailed, discrete and sparse features and a prediction, drifted or not."""
    data = generated(6_000, seed=4)
    data["score"] = 1 / (1 + np.exp(-data["normal"] / 10))
    baseline = baseline_of(tmp_path, data, prediction_column="score")
    con = open_store(tmp_path / "s.duckdb")
    window = generated(6_000, seed=5)
    window["normal"] = window["normal"] + np.where(np.arange(6_000) >= 3_000, 8.0, 0.0)
    score = 1 / (1 + np.exp(-window.pop("normal") / 10))
    window["normal"] = generated(6_000, seed=5)["normal"]
    end = log_rows(con, window, start=T0, step_ms=50)
    log_rows(con, {"prediction": score}, start=T0, step_ms=50, role="output")
    fold_all(con, baseline, T0)
    raw, summed = both(con, baseline, end, 299.95)
    assert_same(raw, summed)
    assert raw["prediction"]["score"]["drifted"] is True
    raw, summed = both(con, baseline, end - timedelta(seconds=150.5), 140.0)
    assert_same(raw, summed)
    assert raw["drift_detected"] is False


def test_rolled_up_hours_give_the_same_check(tmp_path: Path, small: Baseline) -> None:
    """Minutes rolled into hours: windows whose edges cut an hour read raw rows up to it."""
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, clean(3_000, seed=6), start=T0, step_ms=4_000)  # 3 h 20 min
    fold_all(con, small, T0)
    before = con.execute("SELECT count(*) FROM summaries").fetchone()[0]
    figures = _merged(con, small)
    counts = maintain_summaries(
        con, end + timedelta(minutes=5), retention_s=86_400 * 30, rollup_after_s=3_600
    )
    assert counts["merged_to"] < counts["merged_from"] <= before
    steps = dict(con.execute("SELECT step_s, count(*) FROM summaries GROUP BY ALL").fetchall())
    assert set(steps) == {60, 3600}
    assert_same(_merged(con, small), figures)
    for now, window_s in ((end, 3 * 3600.0), (end - timedelta(minutes=47, seconds=3), 5_000.0)):
        raw, summed = both(con, small, now, window_s)
        assert raw["window"]["rows"] > 1_000
        assert_same(raw, summed)


def _merged(con: duckdb.DuckDBPyConnection, baseline: Baseline) -> list:
    rows = merge_summaries(
        con, "SELECT * FROM summaries WHERE baseline = $d", {"d": summary_spec(baseline).digest}
    )
    return sorted((list(r) for r in rows), key=lambda r: repr(r[:4]))


def test_maintenance_merges_partial_minutes_and_expires_old_steps(tmp_path: Path) -> None:
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, clean(600, seed=7), start=T0, step_ms=200)
    for _ in range(3):  # three partial rows per (minute, what): batches, or restarts
        fold_all(con, None, T0)
        con.execute("DELETE FROM summary_baselines")
    rows = con.execute("SELECT count(*) FROM summaries").fetchone()[0]
    figures = sorted(merge_summaries(con, "SELECT * FROM summaries"), key=lambda r: repr(r[:4]))
    counts = maintain_summaries(
        con, end + timedelta(minutes=3), retention_s=86_400, rollup_after_s=86_400
    )
    assert counts == {"expired": 0, "merged_from": rows, "merged_to": rows // 3}
    after = sorted(merge_summaries(con, "SELECT * FROM summaries"), key=lambda r: repr(r[:4]))
    assert_same([list(r) for r in after], [list(r) for r in figures])
    assert figures[0][4] % 3 == 0
    counts = maintain_summaries(
        con, end + timedelta(days=2), retention_s=86_400, rollup_after_s=86_400
    )
    assert counts["expired"] == rows // 3
    assert con.execute("SELECT count(*) FROM summaries").fetchone()[0] == 0


def test_values_beyond_the_category_cap_are_counted_without_names(tmp_path: Path) -> None:
    base = {"code": np.array(["a", "b", "c"] * 400), "x": np.arange(1_200.0)}
    baseline = baseline_of(tmp_path, base)
    con = open_store(tmp_path / "s.duckdb")
    strangers = [f"x{i:04d}" for i in range(3 * MAX_CATEGORIES)]
    values = np.array(["a"] * 600 + strangers + ["x0000"] * 5)
    end = log_rows(con, {"code": values}, start=T0, step_ms=10)
    fold_all(con, baseline, T0)
    maintain_summaries(con, end + timedelta(hours=3), retention_s=86_400, rollup_after_s=3_600)
    spec = summary_spec(baseline)
    merged = merge_summaries(con, "SELECT * FROM summaries WHERE baseline = $d", {"d": spec.digest})
    window = SummaryFigures(merged).categorical_counts("input", list(baseline.features.values()))
    code = window["code"]
    assert code.counts.tolist() == [600, 0, 0]
    assert code.outside == len(strangers) + 5
    assert code.outside_distinct >= len(strangers)
    assert code.examples[0] == ("x0000", 6)
    named = con.execute("SELECT count(*) FROM summaries WHERE what = 'other' AND key IS NOT NULL")
    assert named.fetchone()[0] <= MAX_CATEGORIES


def test_a_window_against_an_earlier_window(tmp_path: Path, small: Baseline) -> None:
    """The reference is the earlier window's counts on the baseline's bins: a shift against
    yesterday is found though both days differ from the baseline alike."""
    con = open_store(tmp_path / "s.duckdb")
    day = clean(2_000, seed=8)
    day["amount"] = np.asarray(day["amount"]) + 20  # both days are off the baseline
    log_rows(con, day, start=T0 - timedelta(days=1), step_ms=100, prefix="y")
    same = clean(2_000, seed=9)
    same["amount"] = np.asarray(same["amount"]) + 20
    end = log_rows(con, same, start=T0, step_ms=100, prefix="t")
    fold_all(con, small, T0 - timedelta(days=2))
    against = parse_against("1d-ago")
    report = check_window(con.cursor, small, model=None, window_s=200, now=end, against=against)
    assert report["against"]["compared"] is True and report["against"]["rows"] == 2_000
    assert report["drifted_features"] == [] and report["window"]["source"] == "summaries"
    assert "amount" in run_check(con.cursor, small, window_s=200, now=end)["drifted_features"]
    moved = clean(2_000, seed=10)
    moved["amount"] = np.asarray(moved["amount"]) + 40
    later = log_rows(con, moved, start=end + timedelta(minutes=5), step_ms=100, prefix="m")
    con.execute("DELETE FROM summaries")
    fold_all(con, None, T0)  # the baseline's own row is already there
    spec = summary_spec(small)
    sql, params = fold_span(spec, [(datetime(2000, 1, 1), datetime(2100, 1, 1))])
    con.execute(f"INSERT INTO summaries {sql}", params)
    report = check_window(
        con.cursor, small, model=None, window_s=200, now=later, against=parse_against("1d-ago")
    )
    assert report["against"]["compared"] is False  # nothing a day before: the baseline stands
    report = check_window(
        con.cursor, small, model=None, window_s=200, now=later,
        against=parse_against("200s@1d-ago"),
    )  # fmt: skip
    assert report["drifted_features"] == ["amount"]


def test_check_merged_reads_any_source(tmp_path: Path, small: Baseline) -> None:
    """Summary rows copied to Parquet files (as replicas ship them) give the store's report."""
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, clean(2_400, seed=11), start=T0, step_ms=100)
    fold_all(con, small, T0)
    for i, half in enumerate(("minute < $m", "minute >= $m")):
        con.execute(
            f"COPY (SELECT * FROM summaries WHERE {half}) TO '{tmp_path}/part{i}.parquet'",
            {"m": T0 + timedelta(minutes=2)},
        )
    start = T0
    end = end.replace(second=0, microsecond=0) + timedelta(minutes=1)
    spec = summary_spec(small)
    fleet = duckdb.connect()
    source = f"SELECT * FROM read_parquet('{tmp_path}/part*.parquet') WHERE baseline = $d"
    merged = check_merged(fleet, source, {"d": spec.digest}, small, start=start, end=end)
    raw = run_check(con.cursor, small, window_s=(end - start).total_seconds(), now=end)
    assert merged["window"].pop("source") == "summaries"
    for section in ("outliers", "multivariate"):  # per-row scores need the rows themselves
        assert section in raw and section not in merged
        raw.pop(section)
    assert_same(raw, merged)


@pytest.mark.parametrize("text", ["7d", "ago", "0s-ago", "1x-ago", "1d@-ago"])
def test_bad_earlier_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ago"):
        parse_against(text)


def test_store_figures_need_whole_minutes(tmp_path: Path, small: Baseline) -> None:
    con = open_store(tmp_path / "s.duckdb")
    log_rows(con, clean(100, seed=12), start=T0, step_ms=100)
    fold_all(con, small, T0)
    spec = summary_spec(small)
    assert store_figures(con.cursor(), spec, "", T0, T0 + timedelta(seconds=50)) is None
    assert store_figures(con.cursor(), spec, "other", T0, T0 + timedelta(minutes=5)) is None
    assert store_figures(con.cursor(), spec, "", T0, T0 + timedelta(minutes=5)) is not None


# ---------------------------------------------------------------- the writer folds every batch


def _by_what(rows: list) -> list:
    return sorted(([*r[:4], r[4], r[5]] for r in rows), key=lambda r: repr(r[:4]))


@pytest.mark.anyio
async def test_the_writer_folds_what_it_stores_across_restarts(
    db_path: str, tmp_path: Path
) -> None:
    """Summaries the writer appended, batch by batch and across a restart, merge into what
    folding the stored rows at once gives."""
    write_training(tmp_path / "train.csv", 3_000)
    build_baseline(str(tmp_path / "train.csv"), out=str(tmp_path / "b.json"))
    baseline = load_baseline(str(tmp_path / "b.json"))
    spec = summary_spec(baseline)
    for seed in (1, 2):  # the second engine opens the store the first wrote
        app = in_process(build_app(monitor=False), db=db_path, baseline=str(tmp_path / "b.json"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as c:
            rows = instances(600, seed=seed, age_shift=10 * seed)
            for half in (rows[:300], rows[300:]):  # two batches at least
                await post_all(c, half)
                assert app.engine.flush()
            await c.post(
                "/echo", content=b"{not json", headers={"content-type": "application/json"}
            )
            assert app.engine.flush()
        cursor = app.engine.writer.store.cursor()
        stored = merge_summaries(
            cursor, "SELECT * FROM summaries WHERE baseline = $d", {"d": spec.digest}
        )
        sql, params = fold_span(spec, [(datetime(2000, 1, 1), datetime(2100, 1, 1))])
        assert_same(_by_what(stored), _by_what(merge_summaries(cursor, sql, params)))
        partial = cursor.execute("SELECT count(*) FROM summaries").fetchone()[0]
        assert partial > len(stored)  # each batch appended its own rows
        cursor.close()
        app.engine.stop()
    figures = SummaryFigures(stored)
    assert figures.window_rows()["input"] == 1_200
    assert figures.parse_failures() == (26, 2)


def test_an_aligned_window_starts_at_a_whole_minute(tmp_path: Path, small: Baseline) -> None:
    """A covered window starts at the minute before its start and reads no raw rows; the report
    equals the raw check of that window."""
    con = open_store(tmp_path / "s.duckdb")
    end = log_rows(con, clean(3_000, seed=13), start=T0 + timedelta(seconds=7), step_ms=100)
    fold_all(con, small, T0)
    summed = check_window(con.cursor, small, model=None, window_s=200.5, now=end)
    assert summed["window"].pop("source") == "summaries"
    start = datetime.fromisoformat(summed["window"]["start"].rstrip("Z"))
    assert start == (end - timedelta(seconds=200.5)).replace(second=0, microsecond=0)
    raw = run_check(con.cursor, small, window_s=(end - start).total_seconds(), now=end)
    assert_same(raw, summed)


@pytest.mark.parametrize("prediction", ["label", "score"])
def test_the_batch_fold_equals_the_sql_fold(tmp_path: Path, prediction: str) -> None:
    """Categorical and numeric features and predictions, values of other types, NaN, infinity
    and more strangers than the cap: the writer's fold and ``fold_sql`` give the same rows."""
    import json

    from inferwatch import Engine, Settings
    from tests.conftest import make_capture

    rng = np.random.default_rng(14)
    train = {
        "x": rng.normal(0, 1, 3_000),
        "code": rng.integers(0, 4, 3_000),
        "kind": np.array(["p", "q", "r"])[rng.integers(0, 3, 3_000)],
        "label": np.array(["yes", "no"])[rng.integers(0, 2, 3_000)],
        "score": rng.random(3_000),
    }
    baseline = baseline_of(tmp_path, train, prediction_column=prediction)
    engine = Engine(Settings.load({"db": str(tmp_path / "s.duckdb"), "baseline": baseline.path}))
    engine.start()
    for i in range(300):
        records = [
            {
                "x": [float(rng.normal(0, 2)), "nan", 1e9, -3.5][i % 4] if i % 7 else None,
                "code": int(rng.integers(0, 6)),
                "kind": f"stranger{i}" if i % 2 else "p",
                "flag": bool(i % 3),
            }
            for _ in range(3)
        ]
        answer = (["yes", "no", 5] if prediction == "label" else [0.2, 0.7, "x"])[i % 3]
        body = json.dumps({"instances": records}).encode().replace(b'"nan"', b"NaN")
        response = json.dumps({"predictions": [answer] * 3}).encode()
        engine.queue.put(make_capture(f"r{i}", body, response, ts=T0.timestamp() + i))
        if i % 50 == 49:
            assert engine.writer.flush()
    engine.stop()
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    spec = summary_spec(baseline)
    stored = merge_summaries(con, "SELECT * FROM summaries WHERE baseline = $d", {"d": spec.digest})
    sql, params = fold_span(spec, [(datetime(2000, 1, 1), datetime(2100, 1, 1))])
    assert_same(_by_what(stored), _by_what(merge_summaries(con, sql, params)))
    whats = {r[2] for r in stored}
    assert {"bin", "category", "other", "type", "non_finite", "rows", "requests"} <= whats


def test_a_fold_that_fails_costs_the_summary_not_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferwatch.middleware import Engine, Settings
    from inferwatch.middleware.summaries import fold as _summary_fold
    from tests.conftest import make_capture

    def broken(*_: Any, **__: Any) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(_summary_fold, "fold_arrays", broken)
    engine = Engine(Settings.load({"db": str(tmp_path / "s.duckdb")}))
    engine.start()
    for i in range(20):
        engine.queue.put(make_capture(f"r{i}", b'{"x": 1}'))
    assert engine.writer.flush()
    assert "Summarizing captured rows failed" in (engine.writer.last_error or "")
    engine.stop()
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    assert con.execute("SELECT count(*) FROM requests").fetchone()[0] == 20
    assert con.execute("SELECT count(*) FROM summaries").fetchone()[0] == 0


def test_each_model_is_folded_with_its_own_baseline(tmp_path: Path) -> None:
    """With a baseline per model, each model's summaries are its rows' only, on its bins, and
    equal the SQL fold of its rows; the scope of every request folds them all."""
    import json
    import random

    from inferwatch import Engine, Settings
    from inferwatch.middleware.baseline.model_scope import scoped_cursors
    from tests.conftest import make_capture

    calm = baseline_of(tmp_path, {"x": np.random.default_rng(1).normal(0, 1, 2_000)}, "calm")
    wide = baseline_of(tmp_path, {"x": np.random.default_rng(2).normal(0, 9, 2_000)}, "wide")
    pairs = f"calm={calm.path},wide={wide.path}"
    engine = Engine(Settings.load({"db": str(tmp_path / "s.duckdb"), "baselines": pairs}))
    engine.start()
    rng = random.Random(3)
    for model, shift in (("calm", 0.0), ("wide", 3.0)):
        for i in range(40):
            body = json.dumps({"instances": [{"x": rng.gauss(shift, 1)} for _ in range(5)]})
            capture = make_capture(f"{model}-{i}", body.encode())
            engine.queue.put(capture._replace(path=f"/v1/models/{model}:predict"))
    engine.stop()
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    for model, baseline in (("calm", calm), ("wide", wide)):
        spec = summary_spec(baseline)
        stored = merge_summaries(
            con,
            "SELECT * FROM summaries WHERE model = $m AND baseline = $d",
            {"m": model, "d": spec.digest},
        )
        sql, params = fold_span(spec, [(datetime(2000, 1, 1), datetime(2100, 1, 1))], model=model)
        scoped = scoped_cursors(con.cursor, model)()  # its requests only, as checks see them
        assert_same(_by_what(stored), _by_what(merge_summaries(scoped, sql, params)))
        assert SummaryFigures(stored).window_rows()["input"] == 200
    everything = SummaryFigures(
        merge_summaries(con, "SELECT * FROM summaries WHERE model = ''", {})
    )
    assert everything.window_rows()["input"] == 400
