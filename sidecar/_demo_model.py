"""The demo's model server: a logistic regression on real data, behind a KServe V1 route.

It trains in a fraction of a second at start on half of the Breast Cancer Wisconsin data (see
``demo_data/README.md``) and answers ``POST /v1/models/cancer:predict``. Like many real pipelines it
is lenient: a missing feature takes its training mean and a number sent as a string is converted,
so a schema break upstream does not fail loudly here. Only a null value makes it fail with 500.

Run alone: ``python -m inferwatch.sidecar._demo_model --port 8080``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
from importlib import resources
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["MODEL_NAME", "LogisticModel", "build_model_app", "load_dataset"]

MODEL_NAME = "cancer"
CLASSES = ("benign", "malignant")


def load_dataset() -> tuple[list[str], np.ndarray, list[str]]:
    """Feature names, the feature matrix and the diagnoses of the shipped data set."""
    data = resources.files(__package__).joinpath("demo_data/breast_cancer.csv.gz")
    with data.open("rb") as raw, gzip.open(raw, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    features = np.array([[float(v) for v in row[:-1]] for row in body])
    return header[:-1], features, [row[-1] for row in body]


class LogisticModel:
    """Standardized logistic regression fitted by gradient descent (no ML library needed)."""

    def __init__(self, names: list[str], x: np.ndarray, y: list[str]) -> None:
        self.names = names
        self.mean = x.mean(axis=0)
        self.scale = x.std(axis=0) + 1e-12
        z = (x - self.mean) / self.scale
        target = np.array([label == "malignant" for label in y], dtype=np.float64)
        self.weights = np.zeros(z.shape[1])
        self.bias = 0.0
        for _ in range(400):
            p = 1.0 / (1.0 + np.exp(-(z @ self.weights + self.bias)))
            gradient = p - target
            self.weights -= 0.5 * (z.T @ gradient / len(z) + 0.01 * self.weights)
            self.bias -= 0.5 * float(gradient.mean())

    def predict(self, instances: list[dict[str, Any]]) -> list[str]:
        matrix = np.empty((len(instances), len(self.names)))
        for i, instance in enumerate(instances):
            for j, name in enumerate(self.names):
                value = instance.get(name, self.mean[j])
                if value is None:
                    raise ValueError(f"instance {i}: {name} is null")
                matrix[i, j] = float(value)
        z = (matrix - self.mean) / self.scale
        p = 1.0 / (1.0 + np.exp(-(z @ self.weights + self.bias)))
        return [CLASSES[int(v >= 0.5)] for v in p]


def build_model_app(model: LogisticModel) -> Starlette:
    """The model server's ASGI app."""

    async def predict(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        try:
            predictions = model.predict(payload["instances"])
        except (KeyError, TypeError, ValueError) as exc:
            return Response(orjson.dumps({"error": str(exc)}), 500, media_type="application/json")
        return Response(orjson.dumps({"predictions": predictions}), media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b'{"ready": true}', media_type="application/json")

    return Starlette(
        routes=[
            Route(f"/v1/models/{MODEL_NAME}:predict", predict, methods=["POST"]),
            Route("/v2/health/ready", ready),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="The inferwatch demo's model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    names, x, y = load_dataset()
    # The even rows train the model; the odd ones play the production traffic in the demo.
    model = LogisticModel(names, x[::2], y[::2])
    uvicorn.run(build_model_app(model), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
