"""Which model a request was for, and what the model server says about that model.

Model servers put the model's name in the path: Open Inference Protocol
``/v2/models/{name}[/versions/{v}]/infer``, KServe V1 ``/v1/models/{name}:predict``, TorchServe
``/predictions/{name}``. :class:`ModelMetadata` reads a model's metadata (``GET /v2/models/{name}``,
else ``/v1/models/{name}``) from the upstream once, on a thread of its own, never on the request
path, and keeps it: the inputs' and outputs' names, datatypes and shapes.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from typing import Any
from urllib.parse import quote

__all__ = ["MAX_MODELS", "ModelMetadata", "model_of"]

logger = logging.getLogger("inferwatch")

_MODEL_PATHS = (
    re.compile(r"/v2/models/([^/]+)(?:/versions/[^/]+)?/(?:infer|generate|generate_stream)$"),
    re.compile(r"/v1/models/([^/:]+):(?:predict|explain)$"),
    re.compile(r"/predictions/([^/]+)(?:/[^/]+)?$"),
)
_REFRESH_S = 600.0  # metadata changes when a model is redeployed; read it again this often
_RETRY_S = 60.0  # after a failed read
MAX_MODELS = 256
"""Distinct model names kept: they come from clients' paths and bodies."""
_TENSOR_KEYS = ("name", "datatype", "shape")


@functools.lru_cache(maxsize=1024)
def model_of(path: str) -> str | None:
    """The model a request path names, or None for a path that names none."""
    path = path.partition("?")[0].rstrip("/")
    for pattern in _MODEL_PATHS:
        if match := pattern.search(path):
            return match[1]
    return None


def _tensors(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    found = []
    for spec in value:
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            found.append({k: spec.get(k) for k in _TENSOR_KEYS})
    return found


class ModelMetadata:
    """Each model's metadata as the upstream serves it, read in the background and kept."""

    def __init__(self, upstream: str | None, *, timeout: float = 2.0) -> None:
        self._upstream = upstream.rstrip("/") if upstream else None
        self._timeout = timeout
        self._known: dict[str, dict[str, Any]] = {}
        self._due: dict[str, float] = {}  # model -> monotonic time of its next read
        self._lock = threading.Lock()

    def seen(self, model: str | None) -> None:
        """Note a request for ``model``; its metadata is read in the background when due."""
        if model is None or self._upstream is None:
            return
        now = time.monotonic()
        with self._lock:
            due = self._due.get(model)
            if (due is not None and due > now) or (due is None and len(self._due) >= MAX_MODELS):
                return
            self._due[model] = now + _RETRY_S  # one read at a time per model
        threading.Thread(
            target=self._read, args=(model,), name="inferwatch-metadata", daemon=True
        ).start()

    def note_path(self, path: str) -> None:
        """:meth:`seen` for the model a request path names (the writer calls it per capture)."""
        model = model_of(path)
        if model is not None and model not in self._known:
            self.seen(model)

    def models(self) -> list[str]:
        """Models seen in request paths so far, in the order they were first seen."""
        return list(self._due)

    def get(self, model: str | None) -> dict[str, Any] | None:
        """The metadata read for ``model`` (``protocol``, ``inputs``, ``outputs``), if any."""
        return self._known.get(model) if model is not None else None

    def _read(self, model: str) -> None:
        import httpx  # here: most collectors never ask a model server, and start without it

        name = quote(model, safe="")
        found: dict[str, Any] | None = None
        try:
            with httpx.Client(timeout=self._timeout) as client:
                for protocol, path in (("v2", f"/v2/models/{name}"), ("v1", f"/v1/models/{name}")):
                    response = client.get(self._upstream + path)
                    if response.status_code == 200:
                        body = response.json()
                        if isinstance(body, dict):
                            found = {
                                "protocol": protocol,
                                "inputs": _tensors(body.get("inputs")),
                                "outputs": _tensors(body.get("outputs")),
                            }
                            break
        except (httpx.HTTPError, ValueError) as exc:
            logger.info("inferwatch: no metadata for model %r: %s", model, exc)
        with self._lock:
            if found is not None:
                self._known[model] = found
                self._due[model] = time.monotonic() + _REFRESH_S
