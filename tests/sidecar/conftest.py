"""Real processes on 127.0.0.1: the test model server and the sidecar in front of it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from inferwatch.middleware.collector import CollectorPaths
from inferwatch.middleware.collector.election import collector_running
from tests.conftest import ROOT, free_port


def wait_until(check: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (httpx.TransportError, OSError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class ModelServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> list[dict[str, Any]]:
        """Every request the model server received, in order."""
        return httpx.get(self.url + "/_seen", timeout=5).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_model_server(port: int | None = None, env: dict[str, str] | None = None) -> ModelServer:
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.apps.upstream_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "2"],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    server = ModelServer(process, port)
    try:
        wait_until(
            lambda: process.poll() is None and httpx.get(server.url + "/_seen", timeout=1),
            what="the model server",
        )
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class Sidecar:
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    db: str
    log: Path
    exit_code: int | None = field(default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status once the process has drained and flushed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.exit_code = self.process.wait(timeout)
        return self.exit_code

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def rows(self, sql: str = "SELECT * FROM requests ORDER BY ts") -> list[dict[str, Any]]:
        """Query the log store; the sidecar must have stopped."""
        # A proxy killed with SIGKILL leaves its collector to write what it holds and exit.
        paths = CollectorPaths.for_db(self.db)
        wait_until(lambda: not collector_running(paths), what="the collector to let go")
        con = duckdb.connect(self.db, read_only=True)
        try:
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            con.close()


@contextlib.contextmanager
def sidecar_process(
    upstream: str, tmp_path: Path, *flags: str, health_path: str | None = "/health"
) -> Iterator[Sidecar]:
    """The sidecar in front of ``upstream``; ``health_path=None`` lets it find the route."""
    port, admin_port = free_port(), free_port()
    health = [] if health_path is None else ["--upstream-health-path", health_path]
    db = str(tmp_path / "sidecar.duckdb")
    log = tmp_path / f"sidecar-{port}.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferwatch", "sidecar", "--upstream", upstream,
             "--host", "127.0.0.1", "--port", str(port), "--admin-host", "127.0.0.1",
             "--admin-port", str(admin_port), "--db", db, *health,
             "--flush-interval", "0.1", *flags],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    sidecar = Sidecar(process, port, admin_port, db, log)
    try:
        wait_until(
            lambda: (
                process.poll() is None
                and httpx.get(sidecar.admin + "/healthz", timeout=1).status_code == 200
            ),
            what="the sidecar",
        )
        yield sidecar
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def model() -> Iterator[ModelServer]:
    server = start_model_server()
    yield server
    server.stop()


@pytest.fixture
def sidecar(model: ModelServer, tmp_path: Path) -> Iterator[Sidecar]:
    with sidecar_process(model.url, tmp_path) as running:
        yield running


class Bystander:
    """A listener no request may reach: it counts every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def bystander() -> Iterator[Bystander]:
    server = Bystander()
    yield server
    server.close()


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are (ask for Connection: close) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)
