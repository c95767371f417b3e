"""A small model app for tests: the routes real model servers expose, and a few odd ones.

Settings for its MonitorMiddleware come from INFERWATCH_* environment variables, so a test can
run it in a real uvicorn process: ``python -m uvicorn tests.apps.model_app:app``.
"""

from __future__ import annotations

import asyncio
import json
import os

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from inferwatch import MonitorMiddleware

released = asyncio.Event()


def build_app(monitor: bool = True) -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        payload = await request.json()
        instances = payload.get("instances", payload) if isinstance(payload, dict) else payload
        count = len(instances) if isinstance(instances, list) else 1
        return Response(
            content=b'{"predictions": [' + b",".join([b"0.5"] * count) + b"]}",
            media_type="application/json",
        )

    @app.post("/predictions/{name}")  # TorchServe's path, which names the model
    async def predict_model(name: str, request: Request) -> Response:
        return await predict(request)

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, media_type=request.headers.get("content-type", "text/plain"))

    @app.post("/items/{item_id}/score")
    async def score(item_id: int) -> dict[str, float]:
        return {"score": item_id / 10}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, object]:
        payload = await request.json()
        return {
            "model": payload["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "hi there"},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }

    @app.get("/sleep")
    async def sleep(ms: float) -> dict[str, float]:
        await asyncio.sleep(ms / 1000)
        return {"slept_ms": ms}

    @app.post("/fail")
    async def fail() -> Response:
        return Response(b'{"error": "model exploded"}', status_code=503)

    @app.post("/crash")
    async def crash() -> Response:
        raise RuntimeError("a bug in the model")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks():
            yield b"first;"
            await released.wait()
            released.clear()
            yield b"second;"
            yield b"third"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.post("/release")
    async def release() -> dict[str, bool]:
        released.set()
        return {"released": True}

    if monitor:
        # MODEL_APP_KEYWORDS: JSON of keyword settings, for tests of keywords given in code.
        keywords = json.loads(os.environ.get("MODEL_APP_KEYWORDS", "{}"))
        app.add_middleware(MonitorMiddleware, **keywords)
    return app


app = build_app(monitor=os.environ.get("MODEL_APP_BARE") != "1")
