"""Attributions from explainer answers: KServe's V1 ``:explain`` and MLServer's alibi-explain
V2 output, read from recorded shapes (tests/middleware/payload/data/explanations) and checked end to
end through the real middleware, writer and DuckDB store."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from inferwatch.middleware.payload.explanations import explained_body
from inferwatch.sidecar._cli import main
from tests.conftest import in_process
from tests.middleware.drift.test_attributions import MEANS, write_parquet

pytestmark = pytest.mark.anyio

DATA = Path(__file__).parent / "data" / "explanations"
KSERVE = json.loads((DATA / "kserve_v1_kernelshap.json").read_text())
MLSERVER = json.loads((DATA / "mlserver_v2_treeshap.json").read_text())


def test_kserve_classes_give_the_predicted_class_attributions() -> None:
    rows = orjson.loads(explained_body(json.dumps(KSERVE).encode()) or b"")["predictions"]
    # instance 0 was predicted class 1, instance 1 class 0
    assert rows == [
        {"attributions": {"x": 0.5, "y": -0.25}},
        {"attributions": {"x": 1.0, "y": -0.5}},
    ]
    unpredicted = copy.deepcopy(KSERVE)
    unpredicted["data"]["raw"]["prediction"] = None
    rows = orjson.loads(explained_body(json.dumps(unpredicted).encode()) or b"")["predictions"]
    assert rows[0] == {"attributions": {"x": 0.5, "y": 0.25}}  # mean |attribution| over classes


def test_mlserver_names_come_from_the_baseline_columns_else_positions() -> None:
    body = json.dumps(MLSERVER).encode()
    rows = orjson.loads(explained_body(body, ("x", "y")) or b"")["predictions"]
    assert rows == [
        {"attributions": {"x": 0.5, "y": -0.25}},
        {"attributions": {"x": -1.0, "y": 0.5}},
    ]
    rows = orjson.loads(explained_body(body) or b"")["predictions"]
    assert rows[1] == {"attributions": [-1.0, 0.5]}
    assert explained_body(b'{"predictions": [1, 2]}') is None
    assert explained_body(b'{"data": {"shap_values": [[1, 2]]}}') is None  # not 3-deep


def shap(x: np.ndarray, y: np.ndarray, weights: dict[str, float]) -> dict[str, np.ndarray]:
    return {"x": weights["x"] * (x - MEANS["x"]), "y": weights["y"] * (y - MEANS["y"])}


def predicted_sign(x: np.ndarray, y: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """+1 where the two-class model predicts class 1, else -1 (class 0's attributions are the
    negated ones of class 1)."""
    parts = shap(x, y, weights)
    return np.where(parts["x"] + parts["y"] > 0, 1.0, -1.0)


def explainer(weights: dict[str, float]) -> Starlette:
    """A linear model's explainers: KServe V1 KernelShap (two classes) and MLServer V2 TreeShap
    (regression), each answering in its recorded shape with the model's exact SHAP values."""

    async def kserve(request: Request) -> JSONResponse:
        rows = (await request.json())["instances"]
        x, y = np.array([r["x"] for r in rows]), np.array([r["y"] for r in rows])
        parts, sign = shap(x, y, weights), predicted_sign(x, y, weights)
        one = np.column_stack([parts["x"], parts["y"]])
        answer = copy.deepcopy(KSERVE)
        answer["data"]["shap_values"] = [(-one).tolist(), one.tolist()]
        answer["data"]["raw"]["prediction"] = (sign > 0).astype(int).tolist()
        answer["data"]["raw"]["instances"] = [[r["x"], r["y"]] for r in rows]
        answer["data"]["raw"]["raw_prediction"] = [[0.5, 0.5]] * len(rows)
        return JSONResponse(answer)

    async def mlserver(request: Request) -> JSONResponse:
        (tensor,) = (await request.json())["inputs"]
        values = np.array(tensor["data"]).reshape(tensor["shape"])
        parts = shap(values[:, 0], values[:, 1], weights)
        explanation = json.loads(MLSERVER["outputs"][0]["data"][0])
        explanation["data"]["shap_values"] = [np.column_stack([parts["x"], parts["y"]]).tolist()]
        explanation["data"]["raw"]["instances"] = values.tolist()
        answer = copy.deepcopy(MLSERVER)
        answer["outputs"][0]["data"] = [json.dumps(explanation)]
        return JSONResponse(answer)

    return Starlette(
        routes=[
            Route("/v1/models/{name}:explain", kserve, methods=["POST"]),
            Route("/v2/models/{name}/infer", mlserver, methods=["POST"]),
        ]
    )


def traffic(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(MEANS["x"], 1.0, rows), rng.normal(MEANS["y"], 2.0, rows)


TRAINED = {"x": 1.0, "y": 0.5}


@pytest.fixture(params=["kserve", "mlserver"])
def form(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def baseline_path(tmp_path: Path, form: str) -> str:
    """Training values and the attributions each explainer gives them (for KServe's
    classifier: those of the predicted class)."""
    x, y = traffic(20_000, 0)
    parts = shap(x, y, TRAINED)
    sign = predicted_sign(x, y, TRAINED) if form == "kserve" else 1.0
    columns = {"x": x, "y": y, "shap_x": sign * parts["x"], "shap_y": sign * parts["y"]}
    source = write_parquet(tmp_path / "train.parquet", columns)
    out = tmp_path / "baseline.json"
    result = CliRunner().invoke(
        main, ["baseline", "build", source, "--out", str(out), "--attributions", "shap_"]
    )
    assert result.exit_code == 0, result.output
    return str(out)


async def explain(db: str, baseline: str, form: str, weights: dict[str, float]) -> dict[str, Any]:
    """2,000 rows explained by ``form``'s explainer; no attributions_field is set."""
    app = in_process(explainer(weights), db=db, baseline=baseline)
    x, y = traffic(2_000, 1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        for start in range(0, len(x), 100):
            xs, ys = x[start : start + 100].tolist(), y[start : start + 100].tolist()
            if form == "kserve":
                path = "/v1/models/linear:explain"
                body: dict[str, Any] = {
                    "instances": [{"x": a, "y": b} for a, b in zip(xs, ys, strict=True)]
                }
            else:
                path = "/v2/models/linear-explainer/infer"
                flat = [v for pair in zip(xs, ys, strict=True) for v in pair]
                body = {
                    "inputs": [
                        {"name": "predict", "shape": [len(xs), 2], "datatype": "FP64", "data": flat}
                    ]
                }
            response = await c.post(path, json=body)
            assert response.status_code == 200
        assert app.engine.flush()
        report = (await c.post("/monitor/drift/check")).json()
    app.engine.stop()
    return report


async def test_explained_attributions_that_change_while_values_do_not_are_found(
    db_path: str, baseline_path: str, form: str
) -> None:
    report = await explain(db_path, baseline_path, form, {"x": 2.0, "y": 0.5})
    assert [n for n, e in report["features"].items() if e["drifted"]] == []
    section = report["attributions"]
    assert section["field"] == "prediction.attributions"
    assert section["features"]["x"]["rows"] == 2_000
    assert "x" in section["drifted_features"]
    assert section["features"]["x"]["mean_abs"] == pytest.approx(1.6, rel=0.1)
    y = section["features"]["y"]
    assert y["mean_abs"] == pytest.approx(y["baseline_mean_abs"], rel=0.1)
    if form == "mlserver":  # the regression's y attributions are as in training
        assert section["drifted_features"] == ["x"]
    # the classifier's y attributions may drift too: with x weighing more, the predicted class
    # follows y less, so the sign of y's predicted-class attributions does
    assert report["drift_detected"] is True


async def test_unchanged_explained_attributions_raise_nothing(
    db_path: str, baseline_path: str, form: str
) -> None:
    report = await explain(db_path, baseline_path, form, TRAINED)
    section = report["attributions"]
    assert section["status"] == "ok" and section["drifted_features"] == []
    assert section["features"]["y"]["rows"] == 2_000
    assert report["status"] == "ok"
