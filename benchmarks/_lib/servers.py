"""Servers on loopback: a free port, a uvicorn command line, a process started with its log,
waited for until it answers, and stopped the way its operator would stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .pinning import taskset


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """uvicorn listens only once lifespan startup is done, so an accepted connect means ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout:.0f} s")


def uvicorn_fast_flags() -> list[str]:
    """``--loop uvloop --http httptools`` where those are installed, as production servers run."""
    flags: list[str] = []
    for module, flag in (("uvloop", ["--loop", "uvloop"]), ("httptools", ["--http", "httptools"])):
        try:
            __import__(module)
        except ImportError:
            continue
        flags += flag
    return flags


def uvicorn_command(
    factory: str,
    port: int,
    cores: int | str,
    app_dir: Path,
    workers: int | None = 1,
    lifespan: str | None = None,
) -> list[str]:
    """uvicorn serving ``factory`` (``module:function``, from ``app_dir``) on 127.0.0.1:``port``
    under ``taskset -c cores``, without access log, on uvloop and httptools where installed."""
    cmd = [
        sys.executable, "-m", "uvicorn", factory, "--factory", "--app-dir", str(app_dir),
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if workers is not None:
        cmd += ["--workers", str(workers)]
    if lifespan is not None:
        cmd += ["--lifespan", lifespan]
    return taskset(cores, [*cmd, *uvicorn_fast_flags()])


def start(
    cmd: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with its output in ``log``; in a session of its own when ``session``, so
    that :func:`kill` takes its workers with it."""
    with open(log, "wb") as handle:
        return subprocess.Popen(
            list(cmd),
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=session,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    """SIGTERM and wait for the exit; seconds it took. Killed when it outlasts ``timeout``."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(proc)
            raise
    return time.monotonic() - started


def kill(proc: subprocess.Popen[bytes] | None, *pids: int | None) -> None:
    """SIGKILL what is left: ``proc`` (its session too, when it has one) and ``pids``."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.wait()
    for pid in pids:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def get_json(port: int, path: str, timeout: float = 30) -> dict[str, Any]:
    """One GET on a new connection, so that with several workers any of them may answer."""
    import httpx

    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout, trust_env=False)
    response.raise_for_status()
    return response.json()


def wait_for_http(
    port: int,
    path: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 30.0,
    ok: int = 500,
) -> None:
    """Until GET ``path`` answers with a status under ``ok`` (a server still starting, or a
    collector not ready yet); fails at once when ``proc`` exits meanwhile."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, trust_env=False)
            if answer.status_code < ok:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} on port {port} did not answer within {timeout:g} s")
        time.sleep(0.05)


def workdir(path: str | Path | None, prefix: str) -> Path:
    """Where a run keeps its DuckDB files and server logs: ``path``, else a new temp folder."""
    where = Path(path or tempfile.mkdtemp(prefix=prefix))
    where.mkdir(parents=True, exist_ok=True)
    return where
