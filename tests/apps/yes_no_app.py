"""A model app that answers "yes" or "no" from the ``x`` of each instance, monitored.

Settings for its MonitorMiddleware come from INFERWATCH_* environment variables, so a test can
run it in a real uvicorn process: ``python -m uvicorn tests.apps.yes_no_app:app``.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferwatch import MonitorMiddleware


def answer(x: float) -> str:
    """The model: ``yes`` from 0.5 up."""
    return "yes" if x >= 0.5 else "no"


async def predict(request: Request) -> Response:
    instances = (await request.json())["instances"]
    body = {"predictions": [answer(row["x"]) for row in instances]}
    return Response(json.dumps(body), media_type="application/json")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
app.add_middleware(MonitorMiddleware)
