"""Start-up errors, SIGTERM draining and flushing, and memory that stays flat under 100 MB."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from tests.conftest import ROOT
from tests.sidecar.conftest import ModelServer, sidecar_process, wait_until

MIB = 2**20


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "inferwatch", "sidecar", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_settings_stop_start_up_with_one_line(tmp_path: Path) -> None:
    done = _cli()
    assert done.returncode == 2
    assert "Missing setting upstream" in done.stderr
    done = _cli("--upstream", "ftp://model:21")
    assert done.returncode == 2
    assert "Bad value for setting upstream: 'ftp://model:21' is not an http://" in done.stderr
    done = _cli("--upstream", "http://127.0.0.1:1", "--upstream-timeout", "soon")
    assert done.returncode == 2
    assert done.stderr == (
        "Error: Bad value for --upstream-timeout: 'soon' is not a duration such as 90s, 5m, 1h "
        "or 7d.\n"
    )
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = _cli("--upstream", "http://127.0.0.1:1", "--host", "127.0.0.1", "--port", str(port),
                    "--db", str(tmp_path / "x.duckdb"))  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        f"Error: Port {port} is in use: another process listens on 127.0.0.1:{port} "
        "(setting port).\n"
    )
    assert "Traceback" not in done.stderr


def test_sigterm_drains_in_flight_requests_then_flushes(model: ModelServer, tmp_path: Path) -> None:
    slow = 6
    with sidecar_process(model.url, tmp_path, "--drain-timeout", "20s") as sidecar:
        with httpx.Client(base_url=sidecar.url, timeout=10) as client:
            quick = sum(client.get("/echo").status_code == 200 for _ in range(20))
        statuses: list[int] = []

        def call() -> None:
            statuses.append(httpx.get(sidecar.url + "/slow?s=1.5", timeout=30).status_code)

        threads = [threading.Thread(target=call) for _ in range(slow)]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: httpx.get(sidecar.admin + "/health", timeout=2).json()["in_flight"] == slow,
            what="the slow requests to be in flight",
        )
        sidecar.process.send_signal(15)
        ready = wait_until(
            lambda: (r := httpx.get(sidecar.admin + "/readyz", timeout=2)).status_code == 503 and r,
            what="/readyz to turn 503",
        )
        assert "the sidecar is shutting down" in ready.json()["reasons"]

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", sidecar.port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_until(refused, what="the proxy port to stop accepting")
        for thread in threads:
            thread.join(30)
        assert statuses == [200] * slow
        assert sidecar.terminate() == 0
    rows = sidecar.rows()
    assert len(rows) == quick + slow
    assert sorted(row["status"] for row in rows) == [200] * (quick + slow)
    assert "draining in-flight requests" in sidecar.output()


def test_drain_timeout_cuts_what_is_left(model: ModelServer, tmp_path: Path) -> None:
    with sidecar_process(model.url, tmp_path, "--drain-timeout", "1s") as sidecar:
        outcome: list[object] = []

        def call() -> None:
            try:
                outcome.append(httpx.get(sidecar.url + "/slow?s=30", timeout=60).status_code)
            except httpx.HTTPError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        wait_until(
            lambda: httpx.get(sidecar.admin + "/health", timeout=2).json()["in_flight"] == 1,
            what="the slow request to be in flight",
        )
        started = time.monotonic()
        assert sidecar.terminate() == 0
        assert time.monotonic() - started < 10
        thread.join(10)
        assert outcome == [500]  # uvicorn's answer for a request cut at the end of the drain
    rows = sidecar.rows()
    assert [(row["status"], row["error"]) for row in rows] == [(500, "CancelledError")]


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_100_mb_streams_through_with_flat_memory(model: ModelServer, tmp_path: Path) -> None:
    size = 100 * MIB
    block = os.urandom(MIB)
    with sidecar_process(model.url, tmp_path) as sidecar:
        process = psutil.Process(sidecar.process.pid)
        with httpx.Client(base_url=sidecar.url, timeout=60) as client:
            assert client.post("/upload", content=block).json()["bytes"] == MIB  # warm
            rss_before, peak_before = process.memory_info().rss, _peak_rss(process.pid)

            def body() -> Iterator[bytes]:
                for _ in range(size // MIB):
                    yield block

            digest = hashlib.sha256()
            for _ in range(size // MIB):
                digest.update(block)
            answer = client.post("/upload", content=body()).json()
            assert answer == {"bytes": size, "sha256": digest.hexdigest()}
            received = 0
            with client.stream("GET", f"/download?bytes={size}") as download:
                for chunk in download.iter_raw():
                    received += len(chunk)
            assert received == size
        rss_after, peak_after = process.memory_info().rss, _peak_rss(process.pid)
    growth = max(rss_after - rss_before, peak_after - peak_before)
    assert growth < 30 * MIB, f"RSS grew by {growth / MIB:.1f} MiB moving 2 x 100 MiB"
