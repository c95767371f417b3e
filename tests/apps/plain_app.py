"""A model app with one route and no health route, as many hand-written model apps are."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def predict(request: Request) -> JSONResponse:
    instances = (await request.json())["instances"]
    return JSONResponse({"predictions": [0.5] * len(instances)})


app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
