from __future__ import annotations

import subprocess
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require_tool, uvicorn_process


def scrape(url: str) -> str:
    response = httpx.get(url + "/monitor/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


def test_metrics_pass_promtool_and_count_what_was_sent() -> None:
    promtool = require_tool("promtool")
    env = {"INFERWATCH_DB": ":memory:", "INFERWATCH_RESOURCE_INTERVAL": "0.2s"}
    with uvicorn_process("tests.apps.model_app:app", env) as (_, url):
        with httpx.Client(base_url=url) as client:
            for item in range(4):
                client.post(f"/items/{item}/score")
            client.post("/fail")
            client.get("/sleep", params={"ms": 5})
            client.post("/predict", json={"instances": [{"a": 1}]})
        time.sleep(0.5)  # let one resource sample land
        text = scrape(url)
    checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                             capture_output=True)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""  # no warnings either
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    route = (("code", "2xx"), ("method", "POST"), ("route", "/items/{item_id}/score"))
    assert samples[("inferwatch_requests_total", route)] == 4
    fail = (("code", "5xx"), ("method", "POST"), ("route", "/fail"))
    assert samples[("inferwatch_requests_total", fail)] == 1
    count = (("method", "GET"), ("route", "/sleep"))
    assert samples[("inferwatch_request_duration_seconds_count", count)] == 1
    assert samples[("inferwatch_request_duration_seconds_bucket", (("le", "0.001"), *count))] == 0
    assert samples[("inferwatch_request_duration_seconds_bucket", (("le", "+Inf"), *count))] == 1
    assert samples[("inferwatch_capture_sampled_total", ())] == 7
    assert samples[("inferwatch_process_resident_memory_bytes", ())] > 0
    assert samples[("inferwatch_health_status", (("status", "degraded"),))] in (0, 1)
    assert ("inferwatch_requests_in_flight", ()) in samples
