"""The weather classifier as a KServe custom model; run by the kserve virtual environment's Python.

V1 ``:predict`` answers ``{"predictions": [labels]}``; V2 ``/infer`` answers two outputs, the
class ``label`` (BYTES, [N]) and the class ``probabilities`` (FP64, [N, K]).
"""

from __future__ import annotations

import os
import sys
import uuid

sys.argv = sys.argv[:1]  # kserve parses the command line when imported

import joblib  # noqa: E402
import kserve  # noqa: E402
import numpy as np  # noqa: E402
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.protocol.rest import server as rest  # noqa: E402


class Weather(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.model = joblib.load(path)
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            x = np.asarray(payload.inputs[0].as_numpy(), dtype=float).reshape(-1, 4)
            labels = self.model.predict(x).astype(object)
            proba = self.model.predict_proba(x)
            outputs = [
                InferOutput("label", [len(labels)], "BYTES", data=labels.tolist()),
                InferOutput(
                    "probabilities", list(proba.shape), "FP64", data=proba.ravel().tolist()
                ),
            ]
            answer_id = payload.id or uuid.uuid4().hex  # KServe's response needs one
            return InferResponse(answer_id, self.name, infer_outputs=outputs)
        x = np.asarray(payload["instances"], dtype=float)
        return {"predictions": self.model.predict(x).tolist()}


def _loopback(original):
    """KServe always binds 0.0.0.0; the tests listen on loopback only."""

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.config.host = "127.0.0.1"

    return init


rest.RESTServer.__init__ = _loopback(rest.RESTServer.__init__)

if __name__ == "__main__":
    model = Weather(os.environ["WEATHER_NAME"], os.environ["WEATHER_MODEL"])
    server = kserve.ModelServer(
        http_port=int(os.environ["WEATHER_PORT"]),
        grpc_port=int(os.environ["WEATHER_GRPC_PORT"]),
        enable_grpc=False,
        workers=1,
    )
    server.start([model])
