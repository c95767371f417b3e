"""Real multi-worker servers of the test model app, and real traffic against them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port, wait_collector_gone

APP = "tests.apps.model_app:app"
LOCK_ERROR = "Could not set lock"


@dataclass
class Server:
    """A running server: its URL, master process, log file and the store it monitors into."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    db: str

    def monitor(self, path: str, method: str = "GET", **kwargs: object) -> httpx.Response:
        """One call to the monitor API on a new connection (so, any worker)."""
        return httpx.request(method, self.url + "/monitor" + path, timeout=60, **kwargs)  # type: ignore[arg-type]

    def logs(self) -> str:
        text = self.log.read_text(errors="replace")
        collector_log = Path(self.db + ".collector.log")
        if collector_log.exists():
            text += collector_log.read_text(errors="replace")
        return text


def command(kind: str, port: int, *extra: str) -> list[str]:
    bind = ["127.0.0.1", str(port)]
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", APP, "--host", bind[0], "--port", bind[1],
                "--workers", "4", "--log-level", "info", *extra]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", APP, "-w", "4", "-k", "uvicorn.workers.UvicornWorker",
            "-b", ":".join(bind), "--log-level", "info", *extra]  # fmt: skip


@contextlib.contextmanager
def serve(
    kind: str,
    folder: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    own_collector: bool = True,
) -> Iterator[Server]:
    """Start ``kind`` (uvicorn or gunicorn) with 4 workers; stop it with SIGTERM at the end.

    ``own_collector``: the workers start the collector, and it is gone after the server is.
    """
    port = free_port()
    db = str(folder / "pod.duckdb")
    log = folder / "server.log"
    environ = {
        **os.environ,
        "INFERWATCH_DB": db,
        "INFERWATCH_FLUSH_INTERVAL": "0.1s",
        "INFERWATCH_COLLECTOR_LINGER": "1s",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            command(kind, port, *extra),
            cwd=ROOT,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, db)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(server.url + "/monitor/readyz", timeout=5).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not start:\n{server.logs()}")
            time.sleep(0.1)
        yield server
    finally:
        stop(server, own_collector=own_collector)


def stop(server: Server, *, own_collector: bool = True) -> None:
    """SIGTERM to the server's master; wait for it and for its collector to be gone."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
    if own_collector:
        wait_collector_gone(server.db)


@dataclass
class Traffic:
    """What a load run got back."""

    ok: list[str] = field(default_factory=list)  # request ids of 200 responses
    failed: list[str] = field(default_factory=list)  # what went wrong otherwise


def load(
    url: str,
    total: int,
    *,
    connections: int = 4,
    on_progress: Callable[[int], None] | None = None,
    retry_resets: bool = False,
) -> Traffic:
    """Send ``total`` POST /predict requests over ``connections`` keep-alive connections.

    ``retry_resets``: send again a request whose keep-alive connection the server closed before
    reading it (a worker leaving after ``max_requests`` does that), as clients do.
    """
    traffic = Traffic()
    lock = threading.Lock()
    sent = [0]

    def run() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                with lock:
                    if sent[0] >= total:
                        return
                    sent[0] += 1
                    number = sent[0]
                if on_progress is not None:
                    on_progress(number)
                body = {"instances": [{"a": number % 7}]}
                try:
                    response = client.post("/predict", json=body)
                except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                    if not retry_resets:
                        traffic.failed.append(repr(exc))
                        continue
                    try:
                        response = client.post("/predict", json=body)
                    except httpx.TransportError as again:
                        traffic.failed.append(repr(again))
                        continue
                except httpx.TransportError as exc:
                    traffic.failed.append(repr(exc))
                    continue
                if response.status_code == 200:
                    traffic.ok.append(response.headers["x-request-id"])
                else:
                    traffic.failed.append(f"status {response.status_code}")

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return traffic
