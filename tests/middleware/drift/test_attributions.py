"""Feature-attribution drift and importances end to end: a served model whose responses carry
SHAP values, a baseline built with the training attributions, /drift through the middleware."""

from __future__ import annotations

import json
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
from inferwatch.sidecar._cli import main
from tests.conftest import in_process

pytestmark = pytest.mark.anyio

MEANS = {"x": 3.0, "y": -1.0}
FIELDS = {"by-name": "prediction.attributions", "as-list": "prediction.attributions",
          "v2-tensor": "shap"}  # fmt: skip


def linear_model(weights: dict[str, float], form: str = "by-name") -> Starlette:
    """A linear model that answers with its exact SHAP values: w * (value - training mean),
    keyed by feature, as a list in the training columns' order, or as an Open Inference
    Protocol output tensor ``shap`` of shape [N, 2]."""

    async def predict(request: Request) -> JSONResponse:
        rows = (await request.json())["instances"]
        shaps = [{k: weights[k] * (row[k] - MEANS[k]) for k in weights} for row in rows]
        if form == "v2-tensor":
            flat = [v for shap in shaps for v in (shap["x"], shap["y"])]
            outputs = [
                {"name": "predict", "shape": [len(rows)], "datatype": "FP64",
                 "data": [sum(shap.values()) for shap in shaps]},
                {"name": "shap", "shape": [len(rows), 2], "datatype": "FP64", "data": flat},
            ]  # fmt: skip
            return JSONResponse({"model_name": "linear", "outputs": outputs})
        out = [
            {"score": sum(shap.values()),
             "attributions": [shap["x"], shap["y"]] if form == "as-list" else shap}
            for shap in shaps
        ]  # fmt: skip
        return JSONResponse({"predictions": out})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"])])


def training(rows: int, seed: int, weights: dict[str, float]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {"x": rng.normal(MEANS["x"], 1.0, rows), "y": rng.normal(MEANS["y"], 2.0, rows)}
    for name, w in weights.items():
        data[f"shap_{name}"] = w * (data[name] - MEANS[name])
    return data


def write_parquet(path: Path, columns: dict[str, np.ndarray]) -> str:
    con = duckdb.connect()
    con.register("t", columns)
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    con.close()
    return str(path)


async def serve(
    db: str,
    baseline: str,
    weights: dict[str, float],
    rows: dict[str, np.ndarray],
    form: str = "by-name",
) -> dict[str, Any]:
    app = in_process(
        linear_model(weights, form),
        db=db,
        baseline=baseline,
        attributions_field=FIELDS[form],
        alert_for=1,
    )
    pairs = zip(rows["x"].tolist(), rows["y"].tolist(), strict=True)
    instances = [{"x": x, "y": y} for x, y in pairs]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        for start in range(0, len(instances), 100):
            response = await c.post("/predict", json={"instances": instances[start : start + 100]})
            assert response.status_code == 200
        assert app.engine.flush()
        report = (await c.post("/monitor/drift/check")).json()
        alerts = (await c.get("/monitor/alerts")).json()["active"]
    app.engine.stop()
    report["active_rules"] = sorted(a["rule"] for a in alerts)
    return report


@pytest.fixture
def baseline_path(tmp_path: Path) -> str:
    source = write_parquet(tmp_path / "train.parquet", training(20_000, 0, {"x": 1.0, "y": 0.5}))
    out = tmp_path / "baseline.json"
    result = CliRunner().invoke(
        main, ["baseline", "build", source, "--out", str(out), "--attributions", "shap_"]
    )
    assert result.exit_code == 0, result.output
    return str(out)


@pytest.mark.parametrize("form", list(FIELDS))
async def test_attributions_that_change_while_values_do_not_are_found(
    db_path: str, baseline_path: str, form: str
) -> None:
    baseline = load_baseline(baseline_path)
    assert set(baseline.features) == {"x", "y"}  # the attribution columns are not features
    assert set(baseline.attributions) == {"x", "y"}
    assert baseline.attribution_means["x"] == pytest.approx(0.8, rel=0.05)  # E|N(0, 1)|
    # the model leans twice as hard on x; the traffic is drawn as in training
    weights = {"x": 2.0, "y": 0.5}
    report = await serve(db_path, baseline_path, weights, training(2_000, 1, {}), form)
    assert [n for n, e in report["features"].items() if e["drifted"]] == []
    section = report["attributions"]
    assert section["drifted_features"] == ["x"]
    assert section["features"]["x"]["mean_abs"] == pytest.approx(1.6, rel=0.1)
    assert section["features"]["y"]["drifted"] is False
    assert report["drift_detected"] is True
    assert "attribution_drift" in report["active_rules"]
    assert report["schema_anomalies"] == []  # attribution outputs are expected, not unexpected
    # the offline check reads the same store and says the same
    args = ["check", "--db", db_path, "--baseline", baseline_path, "--window", "1d"]
    result = CliRunner().invoke(main, [*args, "--attributions-field", FIELDS[form]])
    assert result.exit_code == 1, result.output
    assert "DRIFT attribution x: jensenshannon" in result.output
    assert "ok    attribution y" in result.output


async def test_unchanged_attributions_raise_nothing(db_path: str, baseline_path: str) -> None:
    report = await serve(db_path, baseline_path, {"x": 1.0, "y": 0.5}, training(2_000, 2, {}))
    assert report["attributions"]["drifted_features"] == []
    assert report["attributions"]["status"] == "ok"
    assert report["status"] == "ok"
    assert report["active_rules"] == []


@pytest.mark.parametrize("form", ["json", "csv"])
async def test_drifted_features_are_ranked_by_importance(
    db_path: str, tmp_path: Path, form: str
) -> None:
    source = write_parquet(tmp_path / "train.parquet", training(20_000, 0, {}))
    importances = tmp_path / f"importances.{form}"
    if form == "json":
        importances.write_text(json.dumps({"x": 0.1, "y": 0.9}))
    else:
        importances.write_text("feature,importance\nx,0.1\ny,0.9\n")
    out = str(tmp_path / "baseline.json")
    build_baseline(source, out=out, importances=str(importances))
    shifted = training(2_000, 3, {})
    shifted["x"] += 3.0  # x moves much further than y, but y matters more to the model
    shifted["y"] += 1.0
    report = await serve(db_path, out, {"x": 1.0, "y": 0.5}, shifted)
    assert report["drifted_features"] == ["y", "x"]
    assert report["features"]["y"]["importance"] == 0.9
    assert "feature_drift" in report["active_rules"]
