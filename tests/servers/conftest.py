"""Real model servers, each from its own virtual environment, on 127.0.0.1 behind the sidecar.

MLServer and KServe pin versions of FastAPI, pandas and more that the project's environment
does not share, so each lives in a virtual environment of its own: ``$INFERWATCH_MLSERVER_VENV``
and ``$INFERWATCH_KSERVE_VENV``, by default ``.venv-mlserver`` and ``.venv-kserve`` at the
repository root (``.ci/run`` makes them). Without one the tests that need it are skipped, except
where ``INFERWATCH_REQUIRE_TOOLS=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import pytest

from tests.conftest import ROOT, free_port
from tests.servers._weather import train, write_training_csv

HERE = Path(__file__).resolve().parent


def server_python(tool: str) -> Path:
    """The Python of the virtual environment that has ``tool`` (mlserver or kserve)."""
    venv = Path(os.environ.get(f"INFERWATCH_{tool.upper()}_VENV", ROOT / f".venv-{tool}"))
    python = venv / "bin" / "python"
    if not python.exists():
        if os.environ.get("INFERWATCH_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{tool} is required here and {venv} has no Python")
        pytest.skip(f"{tool} is not installed in {venv}")
    return python


@dataclass
class Server:
    """A model server process and the address it answers on."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running(command: list[str], url: str, ready: str, log: Path, **kwargs) -> Iterator[Server]:
    """Start ``command``, wait until ``url + ready`` answers 200, stop it afterwards."""
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, **kwargs)
    server = Server(process, url, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + ready, timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start:\n{server.output()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The weather classifier, its joblib file and the training CSV the baseline comes from."""
    folder = tmp_path_factory.mktemp("weather")
    model, x, y = train()
    joblib.dump(model, folder / "model.joblib")
    write_training_csv(folder / "train.csv", model, x, y)
    return {"model": model, "folder": folder, "joblib": folder / "model.joblib"}


@contextlib.contextmanager
def mlserver(
    folder: Path,
    joblib_file: Path,
    name: str = "weather",
    outputs: list | None = None,
    also: tuple[str, ...] = (),
) -> Iterator[Server]:
    """MLServer serving the scikit-learn model ``joblib_file`` as ``name`` (and as each name in
    ``also``) on 127.0.0.1; ``outputs`` are declared in its model settings (and metadata)."""
    python = server_python("mlserver")
    port, grpc = free_port(), free_port()
    root = folder / f"mlserver-{port}"
    root.mkdir()
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": grpc,
                "parallel_workers": 0, "metrics_endpoint": None}  # fmt: skip
    (root / "settings.json").write_text(json.dumps(settings))
    for each in (name, *also):
        model_settings = {
            "name": each,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(joblib_file), "version": "1"},
            "outputs": outputs or [],
        }
        (root / "models" / each).mkdir(parents=True)
        (root / "models" / each / "model-settings.json").write_text(json.dumps(model_settings))
    command = [str(python.parent / "mlserver"), "start", str(root)]
    url = f"http://127.0.0.1:{port}"
    with running(command, url, f"/v2/models/{name}/ready", root / "mlserver.log") as server:
        yield server


@contextlib.contextmanager
def kserve(folder: Path, joblib_file: Path, name: str = "weather") -> Iterator[Server]:
    """KServe's Python model server with ``kserve_model.py`` serving ``joblib_file``."""
    python = server_python("kserve")
    port = free_port()
    env = {**os.environ, "WEATHER_MODEL": str(joblib_file), "WEATHER_NAME": name,
           "WEATHER_PORT": str(port), "WEATHER_GRPC_PORT": str(free_port())}  # fmt: skip
    env.pop("PYTHONPATH", None)
    command = [str(python), str(HERE / "kserve_model.py")]
    url = f"http://127.0.0.1:{port}"
    log = folder / f"kserve-{port}.log"
    with running(command, url, f"/v2/models/{name}/ready", log, env=env) as server:
        yield server
