"""Outlier scores and multivariate drift end to end: a baseline built from a real file, rows
scored by the real writer into a real DuckDB store, reports read back from /drift."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from inferwatch.middleware.baseline.build import build_baseline, load_baseline
from inferwatch.middleware.drift.multivariate import ALPHA, multivariate_drift, outlier_share
from inferwatch.middleware.errors import MonitorError
from inferwatch.middleware.stats.outliers import OutlierModel, fit_outlier_model
from inferwatch.sidecar._cli import main
from tests.apps.model_app import build_app
from tests.conftest import in_process

pytestmark = pytest.mark.anyio


def correlated(rows: int, seed: int, rho: float = 0.8) -> dict[str, np.ndarray]:
    """x and y standard normal with correlation ``rho``; plan a category that follows x."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(rows)
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(rows)
    plan = np.where(x > 0.5, "gold", np.where(rng.random(rows) < 0.5, "basic", "plus"))
    return {"x": x, "y": y, "plan": plan}


def write_parquet(path: Path, columns: dict[str, np.ndarray]) -> str:
    con = duckdb.connect()
    con.register(
        "t", {k: v if v.dtype.kind != "U" else v.astype(object) for k, v in columns.items()}
    )
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    con.close()
    return str(path)


def instances(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    names = list(columns)
    return [
        {n: (v.item() if hasattr(v, "item") else v) for n, v in zip(names, row, strict=True)}
        for row in zip(*(columns[n].tolist() for n in names), strict=True)
    ]


@pytest.fixture
def baseline_path(tmp_path: Path) -> str:
    source = write_parquet(tmp_path / "train.parquet", correlated(20_000, seed=0))
    out = tmp_path / "baseline.json"
    build_baseline(source, out=str(out))
    return str(out)


async def post_rows(client: httpx.AsyncClient, rows: list[dict[str, Any]], prefix: str) -> None:
    for start in range(0, len(rows), 100):
        response = await client.post(
            "/echo",
            json={"instances": rows[start : start + 100]},
            headers={"x-request-id": f"{prefix}-{start // 100}"},
        )
        assert response.status_code == 200


async def check(app: Any, client: httpx.AsyncClient) -> dict[str, Any]:
    assert app.engine.flush()
    report = (await client.post("/monitor/drift/check")).json()
    metrics = (await client.get("/monitor/metrics")).text
    mean = report["multivariate"]["mean_score"]
    assert f'inferwatch_multivariate_score{{bound="mean"}} {mean}' in metrics
    assert f"inferwatch_outlier_share {report['outliers']['share']}" in metrics
    return report


async def test_unseen_combinations_are_listed_as_the_most_unusual(
    db_path: str, baseline_path: str
) -> None:
    app = in_process(build_app(monitor=False), db=db_path, baseline=baseline_path)
    odd = [{"x": 1.6, "y": -1.6, "plan": "basic"}, {"x": -1.9, "y": 1.7, "plan": "gold"}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        await post_rows(c, instances(correlated(2_000, seed=1)), "usual")
        for n, row in enumerate(odd):
            response = await c.post(
                "/echo", json={"instances": [row]}, headers={"x-request-id": f"odd-{n}"}
            )
            assert response.status_code == 200
        report = await check(app, c)
    app.engine.stop()
    baseline = load_baseline(baseline_path)
    for name, row in zip(
        ("x", "y"), zip(*[(r["x"], r["y"]) for r in odd], strict=True), strict=True
    ):
        fb = baseline.features[name]
        assert all(fb.minimum < v < fb.maximum for v in row)  # every single value in range
    top = report["outliers"]["top"]
    assert {entry["request_id"] for entry in top[:2]} == {"odd-0", "odd-1"}
    for entry in top[:2]:
        assert {f["name"] for f in entry["features"][:2]} <= {"x", "y", "plan"}
        assert entry["score"] > report["outliers"]["threshold"]
    assert report["outliers"]["rows"] == 2_002
    result = CliRunner().invoke(
        main, ["check", "--db", db_path, "--baseline", baseline_path, "--window", "1d"]
    )
    assert result.exit_code in (0, 1), result.output
    listed = [line.split()[0] for line in result.output.splitlines() if line.startswith(" " * 8)]
    assert {"odd-0[0]", "odd-1[0]"} <= set(listed[:2])
    assert 0 < report["outliers"]["count"] < 40


async def test_a_flipped_correlation_is_found_by_the_multivariate_check_alone(
    db_path: str, baseline_path: str
) -> None:
    app = in_process(build_app(monitor=False), db=db_path, baseline=baseline_path)
    flipped = correlated(2_000, seed=2, rho=-0.8)  # every marginal as in training
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        await post_rows(c, instances(flipped), "flip")
        report = await check(app, c)
    app.engine.stop()
    assert [n for n, e in report["features"].items() if e["drifted"]] == []
    assert report["multivariate"]["drifted"] is True
    assert report["multivariate"]["mean_score"] > report["multivariate"]["upper"]
    assert report["drift_detected"] is True
    assert report["status"] == "alert"


async def test_unchanged_traffic_raises_no_multivariate_alarm(
    db_path: str, baseline_path: str
) -> None:
    app = in_process(build_app(monitor=False), db=db_path, baseline=baseline_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        await post_rows(c, instances(correlated(2_000, seed=4)), "same")
        report = await check(app, c)
    app.engine.stop()
    assert report["multivariate"]["drifted"] is False
    assert report["multivariate"]["lower"] < report["multivariate"]["mean_score"]
    assert report["outliers"]["detected"] is False
    assert report["status"] == "ok"


def wide(rows: int, seed: int, pairs: int = 12) -> dict[str, np.ndarray]:
    """2 * pairs + 1 features (25 by default): pairs of correlated numbers of different scales
    and a category."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for i in range(pairs):
        base = rng.standard_normal(rows)
        columns[f"a{i}"] = 10 * i + (i + 1) * base
        columns[f"b{i}"] = np.exp(0.6 * base + 0.4 * rng.standard_normal(rows))
    columns["tier"] = rng.choice(np.array(["s", "m", "l", "xl"]), rows, p=[0.4, 0.3, 0.2, 0.1])
    return columns


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> OutlierModel:
    folder = tmp_path_factory.mktemp("wide")
    source = write_parquet(folder / "train.parquet", wide(200_000, seed=0))
    build_baseline(source, out=str(folder / "baseline.json"))
    model = load_baseline(str(folder / "baseline.json")).outliers
    assert model is not None
    assert len(model.names) == 25
    return model


@pytest.mark.parametrize("size", [200, 2_000, 20_000])
def test_windows_without_drift_alarm_no_more_than_the_stated_rate(
    wide_model: OutlierModel, size: int
) -> None:
    model = wide_model
    data = wide(50 * size, seed=size)
    numbers = np.column_stack([data[n] for n in model.numeric])
    codes = model.codes([[v] for v in data["tier"].tolist()])
    scores = model.score(numbers, codes).reshape(50, size)
    shifts = outliers = 0
    for window in scores:
        mean = float(np.minimum(window, model.clip).mean())
        shifts += multivariate_drift(model, size, mean)["drifted"]
        outliers += outlier_share(model, size, int((window > model.threshold).sum()))["detected"]
    # at ALPHA = 0.1%, 50 checks give 2 or more alarms with a chance under 0.2%
    assert ALPHA == 0.001
    assert shifts <= 1
    assert outliers <= 1


def alarms(model: OutlierModel, data: dict[str, np.ndarray], size: int) -> tuple[int, int]:
    """Multivariate and outlier-share alarms over the windows of ``size`` rows in ``data``."""
    numbers = np.column_stack([data[n] for n in model.numeric])
    codes = np.full((len(numbers), 1), -1, dtype=np.intp)
    for code, value in enumerate(model.values[0]):
        codes[data["tier"] == value, 0] = code
    scores = model.score(numbers, codes).reshape(-1, size)
    means = np.minimum(scores, model.clip).mean(axis=1)
    counts = (scores > model.threshold).sum(axis=1)
    shifts = sum(multivariate_drift(model, size, float(m))["drifted"] for m in means)
    found = sum(outlier_share(model, size, int(c))["detected"] for c in counts)
    return shifts, found


@pytest.mark.parametrize("size", [200, 2_000, 20_000])
def test_the_false_alarm_rate_holds_over_baseline_draws(size: int) -> None:
    """Four baselines, each fitted on its own draw of training rows and checked on its own
    traffic: the tests' allowance for the baseline's sampling error is checked, not one lucky
    baseline. Nine features keep this fast; 20,000-row windows are 10 per baseline."""
    windows = 50 if size < 20_000 else 10
    shifts = outliers = 0
    for seed in range(1, 5):
        training = wide(40_000, seed=seed, pairs=4)
        tiers = training["tier"].tolist()
        model = fit_outlier_model(
            {n: v for n, v in training.items() if n != "tier"},
            {"tier": tiers},
            {"tier": [v for v, _ in Counter(tiers).most_common()]},
            seed=seed,
        )
        assert model is not None
        found = alarms(model, wide(windows * size, seed=1_000 * seed + size, pairs=4), size)
        shifts, outliers = shifts + found[0], outliers + found[1]
    # at most 200 checks at ALPHA = 0.1%: 3 or more alarms have a chance near 0.1%
    assert shifts <= 2
    assert outliers <= 2


async def test_a_baseline_from_the_log_store_has_its_model_too(
    db_path: str, tmp_path: Path, baseline_path: str
) -> None:
    app = in_process(build_app(monitor=False), db=db_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        await post_rows(c, instances(correlated(5_000, seed=5)), "served")
        assert app.engine.flush()
    app.engine.stop()
    out = str(tmp_path / "from-store.json")
    build_baseline(db_path, out=out)
    model, reference = load_baseline(out).outliers, load_baseline(baseline_path).outliers
    assert model is not None and reference is not None
    assert set(model.names) == {"x", "y", "plan"} and model.rows == 2_500
    odd = model.score(np.array([[1.6, -1.6], [0.0, 0.0]]), model.codes([["plus"], ["plus"]]))
    assert odd[0] > model.threshold > odd[1]
    assert model.threshold == pytest.approx(reference.threshold, rel=0.2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": -1}, "outliers.threshold"),
        ({"variances": [1.0]}, "outliers.variances"),
        ({"components": "x"}, "outliers.components"),
        ({"treshold": 1.0}, "unknown key 'treshold'"),
    ],
)
def test_a_broken_outlier_model_is_refused_naming_it(
    baseline_path: str, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    doc = json.loads(Path(baseline_path).read_text())
    doc["outliers"] |= change
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc))
    with pytest.raises(MonitorError, match=message):
        load_baseline(str(broken))


async def test_the_writer_scores_a_row_as_the_model_does(db_path: str, tmp_path: Path) -> None:
    """Numbers, whole-number categories, booleans and strings reach the model as in training."""
    rng = np.random.default_rng(6)
    n = 5_000
    x = rng.standard_normal(n)
    train = {
        "x": x,
        "level": np.where(x > 0, rng.integers(1, 3, n), rng.integers(2, 4, n)),
        "flag": x + rng.standard_normal(n) > 0,
        "city": rng.choice(np.array(["Lyon", "Oslo", "Kyiv"]), n).astype(object),
    }
    source = write_parquet(tmp_path / "train.parquet", train)
    out = str(tmp_path / "baseline.json")
    build_baseline(source, out=out)
    model = load_baseline(out).outliers
    assert model is not None and set(model.categorical) == {"level", "flag", "city"}
    rows = [
        {"x": float(rng.standard_normal()), "level": int(rng.integers(1, 5)),
         "flag": bool(rng.random() < 0.5), "city": str(rng.choice(["Lyon", "Oslo", "Rome"]))}
        for _ in range(300)
    ]  # fmt: skip
    rows[0].pop("city")  # missing
    rows[1]["x"] = None  # null
    app = in_process(build_app(monitor=False), db=db_path, baseline=out)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        for i, row in enumerate(rows):
            response = await c.post(
                "/echo", json={"instances": [row]}, headers={"x-request-id": f"r{i:03d}"}
            )
            assert response.status_code == 200
        assert app.engine.flush()
        store = app.engine.writer.store
        assert store is not None
        stored = store.query("SELECT request_id, score FROM row_scores ORDER BY request_id")
    app.engine.stop()
    numbers = np.array([[np.nan if r["x"] is None else r["x"]] for r in rows])

    def key(value: Any) -> str | None:  # the baseline's category keys, written out by hand
        if value is None:
            return None
        return str(value).lower() if isinstance(value, bool) else str(value)

    keyed = [[key(r.get(name)) for name in model.categorical] for r in rows]
    expected = model.score(numbers, model.codes(keyed))
    assert [r for r, _ in stored] == [f"r{i:03d}" for i in range(300)]
    np.testing.assert_allclose([s for _, s in stored], expected, rtol=1e-9)


def predictor() -> Starlette:
    """A KServe V1 model server: every model answers its instances back as predictions."""

    async def predict(request: Request) -> JSONResponse:
        return JSONResponse({"predictions": (await request.json())["instances"]})

    return Starlette(routes=[Route("/v1/models/{name}:predict", predict, methods=["POST"])])


async def test_each_model_is_scored_and_reported_by_its_own_outlier_model(
    db_path: str, tmp_path: Path
) -> None:
    folders = {"up": 0.8, "down": -0.8}  # each model's training data, correlated its own way
    paths = {}
    for model, rho in folders.items():
        source = write_parquet(tmp_path / f"{model}.parquet", correlated(20_000, 0, rho))
        paths[model] = str(tmp_path / f"{model}.json")
        build_baseline(source, out=paths[model])
    app = in_process(
        predictor(),
        db=db_path,
        baseline=paths["up"],
        baselines=",".join(f"{m}={p}" for m, p in paths.items()),
    )
    sizes = {"up": 1_200, "down": 800}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        for n, (model, rho) in enumerate(folders.items()):
            rows = instances(correlated(sizes[model], seed=10 + n, rho=rho))
            for start in range(0, len(rows), 100):
                response = await c.post(
                    f"/v1/models/{model}:predict",
                    json={"instances": rows[start : start + 100]},
                    headers={"x-request-id": f"{model}-{start}"},
                )
                assert response.status_code == 200
        assert app.engine.flush()
        reports = {}
        for model in folders:
            answer = await c.post(f"/monitor/drift/check?model={model}")
            assert answer.status_code == 200, answer.text
            reports[model] = answer.json()
    app.engine.stop()
    for model, report in reports.items():
        assert report["outliers"]["rows"] == sizes[model]  # its own rows, not the other's
        assert all(e["request_id"].startswith(model) for e in report["outliers"]["top"])
        # scored by the other model's outlier model, "down" would be all outliers
        assert report["multivariate"]["drifted"] is False, model
        assert report["outliers"]["detected"] is False, model
