"""A model server for the sidecar's tests: plain Starlette, no inferwatch inside.

It speaks the routes real model servers expose (KServe V1, the Open Inference Protocol,
OpenAI-style chat completions with ``stream: true``), plus health, slow, reset and streaming
routes, and it records every request it receives so that a test can see what reached it:
``python -m uvicorn tests.apps.upstream_app:app``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

seen: list[dict[str, Any]] = []
abandoned = {"streams": 0}  # streams whose client went away before the last event
released = asyncio.Event()
ready = os.environ.get("UPSTREAM_READY", "1") == "1"


def _record(request: Request) -> None:
    seen.append(
        {
            "method": request.method,
            "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
            "path": request.url.path,
            "query": request.url.query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
        }
    )


async def v1_predict(request: Request) -> Response:
    payload = orjson.loads(await request.body())
    instances = payload["instances"]
    return JSONResponse({"predictions": [sum(row.values()) for row in instances]})


async def v2_infer(request: Request) -> Response:
    payload = orjson.loads(await request.body())
    tensor = payload["inputs"][0]
    rows = tensor["shape"][0]
    width = len(tensor["data"]) // rows
    sums = [sum(tensor["data"][i * width : (i + 1) * width]) for i in range(rows)]
    return JSONResponse(
        {
            "model_name": "m",
            "outputs": [{"name": "y", "shape": [rows], "datatype": "FP64", "data": sums}],
        }
    )


async def chat(request: Request) -> Response:
    payload = orjson.loads(await request.body())
    text = ["Hello", " from", " the", " model"]
    if not payload.get("stream"):
        return JSONResponse(
            {
                "id": "c1",
                "object": "chat.completion",
                "model": payload["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "".join(text)},
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
            }
        )
    wait = request.query_params.get("wait") == "1"

    async def events() -> Any:
        finished = False
        try:
            async for event in _chat_events(payload, text, wait):
                yield event
            finished = True
        finally:
            if not finished:
                abandoned["streams"] += 1

    return StreamingResponse(events(), media_type="text/event-stream")


async def _chat_events(payload: dict[str, Any], text: list[str], wait: bool) -> Any:
    for i, piece in enumerate(text):
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": payload["model"],
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        if i == 0 and wait:
            await released.wait()  # the test releases it once it has read this event
            released.clear()
    last = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": payload["model"],
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }
    yield b"data: " + orjson.dumps(last) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def release(request: Request) -> Response:
    released.set()
    return JSONResponse({"released": True})


async def health(request: Request) -> Response:
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", "5")))
    return JSONResponse({"slept": True})


async def drip(request: Request) -> Response:
    """Send ``n`` chunks ``gap`` seconds apart: a stream slower in total than in each pause."""
    count, gap = int(request.query_params.get("n", "5")), float(request.query_params["gap"])

    async def chunks() -> Any:
        for i in range(count):
            if i:
                await asyncio.sleep(gap)
            yield b"chunk %d\n" % i

    return StreamingResponse(chunks(), media_type="text/plain")


async def reset(request: Request) -> Response:
    """Send part of a body, then reset the TCP connection (RST, not FIN)."""
    transport = _transport_of(request)
    transport.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
        b'{"predictions": [0.1, 0.2'
    )
    await asyncio.sleep(0.05)
    sock: socket.socket = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await asyncio.sleep(0.05)
    return Response()  # uvicorn drops it: the connection is gone


async def hangup(request: Request) -> Response:
    """Close the connection without a word, as a server does with a keep-alive connection it
    gives up just as a request arrives on it."""
    _transport_of(request).close()
    await asyncio.sleep(0.05)
    return Response()  # uvicorn drops it: the connection is gone


async def head_only(request: Request) -> Response:
    """Send a response's head, then close the connection before its body, as a server killed
    between the two writes does."""
    transport = _transport_of(request)
    transport.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 197\r\n\r\n"
    )
    transport.close()
    await asyncio.sleep(0.05)
    return Response()  # uvicorn drops it: the connection is gone


async def upload(request: Request) -> Response:
    """Read a body of any size chunk by chunk; answer its size and digest."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        digest.update(chunk)
    return JSONResponse({"bytes": size, "sha256": digest.hexdigest()})


async def download(request: Request) -> Response:
    size = int(request.query_params.get("bytes", "1000000"))
    block = b"x" * 65536

    async def chunks() -> Any:
        left = size
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type=request.headers.get("content-type"))


async def requests_seen(request: Request) -> Response:
    return JSONResponse(seen)


async def streams_abandoned(request: Request) -> Response:
    return JSONResponse(abandoned)


async def catch_all(request: Request) -> Response:
    return JSONResponse({"path": request.url.path}, status_code=404)


class _Recorder:
    """Records every request before routing, and offers the transport to the reset route."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if not scope["path"].startswith("/_"):
                _record(Request(scope))
            scope.setdefault("extensions", {})["inferwatch.transport"] = lambda: _transport(send)
        await self.app(scope, receive, send)


def _transport_of(request: Request) -> Any:
    return request.scope["extensions"]["inferwatch.transport"]()


def _transport(send: Any) -> Any:
    # uvicorn's send is a bound method of its RequestResponseCycle, which holds the transport.
    return send.__self__.transport


routes = [
    Route("/v1/models/m:predict", v1_predict, methods=["POST"]),
    Route("/v2/models/m/infer", v2_infer, methods=["POST"]),
    Route("/v1/chat/completions", chat, methods=["POST"]),
    Route("/release", release, methods=["POST"]),
    Route("/health", health),
    Route("/v2/health/ready", health),
    Route("/slow", slow),
    Route("/drip", drip),
    Route("/reset", reset),
    Route("/hangup", hangup, methods=["GET", "POST"]),
    Route("/head-only", head_only),
    Route("/upload", upload, methods=["POST", "PUT"]),
    Route("/download", download),
    Route("/echo", echo, methods=["POST", "GET", "PUT", "DELETE", "PATCH", "HEAD"]),
    Route("/_seen", requests_seen),
    Route("/_abandoned", streams_abandoned),
    Route("/{path:path}", catch_all, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
]
app = _Recorder(Starlette(routes=routes))
