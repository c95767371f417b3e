"""schemathesis against the monitor API's own OpenAPI document, on a real uvicorn server.

The model app from tests/apps runs with MonitorMiddleware, a baseline, an admin token and some
traffic (``guarded_app``), so that reports have features, anomalies and labels in them.
schemathesis generates requests from GET /monitor/openapi.json, valid ones and invalid ones, and
checks every answer: no 5xx, a status the document lists, and a body of the documented shape.
"""

from __future__ import annotations

import os
import random
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from inferwatch.middleware.api.app import build_api
from inferwatch.middleware.api.openapi import openapi_document
from inferwatch.middleware.engine.engine import Engine
from inferwatch.middleware.settings import Settings
from tests.conftest import wait_until
from tests.reliability.conftest import ADMIN_TOKEN, App

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# Per operation; INFERWATCH_RELIABILITY_FULL=1 runs many more.
EXAMPLES = 400 if os.environ.get("INFERWATCH_RELIABILITY_FULL") == "1" else 25


@pytest.fixture(scope="module")
def monitor_url(guarded_app: App) -> str:
    """The guarded model app, with traffic in its store, labels and one skew check done."""
    with httpx.Client(base_url=guarded_app.url, timeout=30) as client:
        start = client.get("/monitor/health").json()["capture"]["stored"]
        rng = random.Random(4)
        for i in range(30):
            row = {"amount": rng.gauss(90, 5), "channel": "web", "odd": "<b>x</b>"}
            sent = client.post("/predict", json=row, headers={"x-request-id": f"schema-{i}"})
            assert sent.status_code == 200
        client.post("/fail", json={})
        wait_until(lambda: client.get("/monitor/health").json()["capture"]["stored"] >= start + 31)
        labels = [{"request_id": f"schema-{i}", "label": 0.5} for i in range(30)]
        assert client.post("/monitor/labels", json=labels, headers=AUTH).status_code == 200
        assert client.post("/monitor/drift/check", headers=AUTH).status_code == 200
    return guarded_app.url


@pytest.fixture(scope="module")
def api_schema(monitor_url: str) -> Any:
    return schemathesis.openapi.from_url(monitor_url + "/monitor/openapi.json")


DOCUMENT = openapi_document(token_required=True)
OPERATIONS = [
    pytest.param(path, method.upper(), mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # invalid requests need something to be invalid: parameters or a body
    if mode is GenerationMode.POSITIVE or "parameters" in operation or "requestBody" in operation
]


# schemathesis' own pytest plugin (from_fixture) reaches into pytest internals that pytest 9
# removed, so each operation's strategy is driven by Hypothesis directly.
@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS)
def test_every_route_answers_as_documented(
    api_schema: Any, path: str, method: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def answers(case: Any) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=30)

    answers()


def test_the_document_lists_every_route(monitor_url: str) -> None:
    document = httpx.get(monitor_url + "/monitor/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": "/monitor"}]
    app = build_api(Engine(Settings.load({"db": ":memory:"})))
    routes = {route.path for route in app.routes}  # type: ignore[attr-defined]
    assert routes == set(document["paths"])
    guarded = {
        path for path, item in document["paths"].items() for op in item.values() if "security" in op
    }
    assert guarded == {
        "/drift",
        "/drift/check",
        "/drift/history",
        "/alerts",
        "/labels",
        "/export/{table}.parquet",
        "/dashboard",
    }
    assert "security" not in str(openapi_document(token_required=False)["paths"])


# Found probing the date-time parameters the document declares: a time with an offset at the
# calendar's edge overflowed when moved to UTC, and the API answered 500.
EDGE_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


@pytest.mark.parametrize("moment", EDGE_TIMES)
@pytest.mark.parametrize(
    "route",
    [
        "/drift/history?since=",
        "/alerts?since=",
        "/export/requests.parquet?since=",
        "/export/features.parquet?until=",
    ],
)
def test_a_time_at_the_calendars_edge_is_a_400(monitor_url: str, route: str, moment: str) -> None:
    answer = httpx.get(monitor_url + "/monitor" + route + quote(moment), headers=AUTH)
    assert answer.status_code == 400, answer.text
    assert "outside the years 1 to 9999" in answer.json()["error"]


@pytest.mark.parametrize("moment", EDGE_TIMES)
def test_a_label_timestamp_at_the_calendars_edge_is_a_400(monitor_url: str, moment: str) -> None:
    body = [{"request_id": "r0", "label": 1, "timestamp": moment}]
    answer = httpx.post(monitor_url + "/monitor/labels", json=body, headers=AUTH)
    assert answer.status_code == 400, answer.text
