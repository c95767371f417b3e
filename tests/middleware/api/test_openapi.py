"""The OpenAPI document and the routes agree: the same paths and methods, the same guarded ones.

The document is written beside the routes (``api/openapi.py``, ``api/app.py``); this holds the two
together. The answers' shapes are checked against the document by schemathesis
(tests/reliability/test_api_schema.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from inferwatch import Engine, Settings
from inferwatch.middleware.api.app import build_api
from inferwatch.middleware.api.openapi import openapi_document

TOKEN = "t" * 32
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method.upper()): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    engine = Engine(Settings(db=str(tmp_path / "monitor.duckdb"), admin_token=TOKEN))
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.mark.anyio
async def test_every_route_is_documented_and_every_operation_routed(engine: Engine) -> None:
    app = build_api(engine)
    routed = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) & METHODS
    }
    documented = set(_operations(openapi_document(token_required=True)))
    assert routed == documented
    # and the document the API serves is that one, its server the path it is mounted at
    transport = httpx.ASGITransport(app=app, root_path="/monitor")
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        served = (await client.get("/openapi.json")).json()
    assert served == openapi_document(token_required=True, server="/monitor")


@pytest.mark.anyio
async def test_the_operations_marked_secured_are_the_ones_the_token_guards(engine: Engine) -> None:
    app = build_api(engine)
    operations = _operations(openapi_document(token_required=True))
    assert any("security" in op for op in operations.values())
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for (path, method), operation in sorted(operations.items()):
            url = path.replace("{table}", "requests")
            unsigned = await client.request(method, url, json=[])
            signed = await client.request(
                method, url, json=[], headers={"Authorization": f"Bearer {TOKEN}"}
            )
            if "security" in operation:
                assert unsigned.status_code == 401, (method, path)
                assert "401" in operation["responses"], (method, path)
                assert signed.status_code != 401, (method, path)
            else:
                assert unsigned.status_code != 401, (method, path)
            assert str(signed.status_code) in operation["responses"], (method, path, signed.text)
