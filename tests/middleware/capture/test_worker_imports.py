"""A worker that hands over to a collector never loads the engine, nor an HTTP client library.

DuckDB, NumPy, the engine's modules and httpx (with the command-line packages its ``__init__``
imports where they are installed) would only add objects that every full garbage collection of
the model's process walks (its pauses are the model's p99), and memory in every worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

_WORKER = """
import asyncio, json, sys
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from inferwatch import MonitorMiddleware

async def predict(request):
    return JSONResponse({"predictions": [len(await request.body())]})

app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
app.add_middleware(MonitorMiddleware, db=sys.argv[1], collector_autostart=False)

async def main():
    said = []
    async def receive():
        return {"type": "http.request", "body": b'{"instances": [[1, 2]]}', "more_body": False}
    async def send(message):
        said.append(message)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "root_path": "",
             "query_string": b"", "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    return said[0]["status"]

status = asyncio.run(main())
loaded = [m for m in ("duckdb", "numpy", "pyarrow", "httpx", "inferwatch.middleware.engine.engine",
                      "inferwatch.middleware.store.writer") if m in sys.modules]
print(json.dumps({"status": status, "loaded": loaded}))
"""


def test_a_worker_monitors_without_loading_the_engine(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(tmp_path / "monitor.duckdb")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"status": 200, "loaded": []}
