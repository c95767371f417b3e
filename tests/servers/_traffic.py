"""Traffic through the sidecar and the monitor API's answers about it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.conftest import ROOT


def build_baseline(train_csv: Path, out: Path) -> Path:
    """``inferwatch baseline build`` as a user runs it on the training CSV."""
    subprocess.run(
        [sys.executable, "-m", "inferwatch", "baseline", "build", str(train_csv), "--out", str(out),
         "--label-column", "weather", "--prediction-column", "predict"],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return out


def oip_body(x: np.ndarray) -> dict[str, Any]:
    """An Open Inference Protocol request with one [N, 4] tensor, as MLServer's docs send it."""
    return {"inputs": [{"name": "input-0", "shape": list(x.shape), "datatype": "FP64",
                        "data": x.ravel().tolist()}]}  # fmt: skip


def v1_body(x: np.ndarray) -> dict[str, Any]:
    """A KServe V1 request: a list of instances, each a list of the 4 features."""
    return {"instances": x.tolist()}


def send(
    url: str,
    path: str,
    x: np.ndarray,
    body: Callable[[np.ndarray], dict[str, Any]],
    answer: Callable[[dict[str, Any]], list],
    batch: int = 25,
) -> list[tuple[str, int, Any]]:
    """Send ``x`` in batches with an X-Request-ID each; (request id, index, prediction) per row."""
    rows = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            request_id = f"req-{uuid.uuid4().hex}"
            response = client.post(path, json=body(chunk), headers={"X-Request-ID": request_id})
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"] == request_id
            predicted = answer(response.json())
            assert len(predicted) == len(chunk)
            rows += [(request_id, i, p) for i, p in enumerate(predicted)]
    return rows


def check_now(admin: str) -> dict[str, Any]:
    """Run a skew check now; it sees every request already answered."""
    response = httpx.post(admin + "/drift/check", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def post_labels(admin: str, rows: list[tuple[str, int, Any]], labels: list[Any]) -> None:
    body = [
        {"request_id": r, "index": i, "label": y} for (r, i, _), y in zip(rows, labels, strict=True)
    ]
    response = httpx.post(admin + "/labels", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": len(body), "matched": len(body)}, response.json()


def evaluation(admin: str) -> dict[str, Any]:
    response = httpx.get(admin + "/evaluation", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def drifted_inputs(report: dict[str, Any]) -> set[str]:
    return {name for name, entry in report["features"].items() if entry["drifted"]}
