"""The store a monitored run wrote, and the collector that holds it: found, awaited, counted."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
from pathlib import Path


def count_db(path: Path) -> dict[str, int]:
    """Requests, instance rows, stored values and cleanly parsed requests in a log store."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        requests, input_rows = con.execute(
            "SELECT count(*), coalesce(sum(input_rows), 0) FROM requests"
        ).fetchone()
        features = con.execute("SELECT count(*) FROM features").fetchone()[0]
        statuses = dict(
            con.execute("SELECT input_status, count(*) FROM requests GROUP BY 1").fetchall()
        )
    finally:
        con.close()
    return {
        "requests": int(requests),
        "input_rows": int(input_rows),
        "feature_values": int(features),
        "input_ok": int(statuses.get("ok", 0)),
    }


def find_collector(db: Path, serving: set[int]) -> int | None:
    """The collector process of the store ``db``, or None when no process but a worker has it.

    Looked for in this order: a pid file beside the store, a process whose command line names
    ``collector`` and the store, any other process that holds the store open.
    """
    import psutil

    for path in sorted(db.parent.glob(db.name + "*")):
        if "pid" not in path.name and path.suffix != ".lock":
            continue
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if pid not in serving and psutil.pid_exists(pid):
            return pid
    others = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid not in serving and p.pid != os.getpid()
    ]
    for proc in others:
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "collector" in cmdline and str(db) in cmdline:
            return proc.pid
    for proc in others:
        if "python" not in " ".join(proc.info["cmdline"] or []):
            continue
        try:
            if any(f.path == str(db) for f in proc.open_files()):
                return proc.pid
        except psutil.Error:
            continue
    return None


COLLECTOR_LINGER_S = 1.0
"""The ``collector_linger`` the benchmarks give a collector a worker starts (env twin below):
it writes everything and exits this long after the last worker has gone."""
COLLECTOR_ENV = {"INFERWATCH_COLLECTOR_LINGER": f"{COLLECTOR_LINGER_S:g}s"}


def collector_done(pid: int | None, linger: float = COLLECTOR_LINGER_S) -> bool | None:
    """Wait for a collector to exit once its workers are gone, so that its store can be opened;
    SIGTERM (it still writes everything) when it has not exited by itself within ``linger`` + 10 s.
    Whether it exited by itself; None without a collector."""
    import psutil

    if pid is None:
        return None

    def gone(seconds: float) -> bool:
        try:
            psutil.Process(pid).wait(timeout=seconds)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            return False
        return True

    if gone(linger + 10):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not gone(30):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return False


def accounted(capture: Mapping[str, int], stored: int | None) -> bool | None:
    """Whether every sampled request was stored, dropped or counted as a write error; None
    where nothing was monitored."""
    if not capture or stored is None:
        return None
    lost = capture.get("dropped", 0) + capture.get("write_errors", 0)
    return stored + lost == capture.get("sampled")


def complete(counts: Mapping[str, int], records: int) -> bool:
    """Whether every stored request parsed into ``records`` instances of 10 inputs and 1
    prediction (``counts`` as :func:`count_db` gives them)."""
    requests = counts.get("requests", 0)
    return (
        counts.get("input_ok") == requests
        and counts.get("input_rows") == requests * records
        and counts.get("feature_values") == requests * records * 11
    )
