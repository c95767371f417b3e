"""How soon a new collector serves after ``kill -9`` of the running one, mid-traffic.

Runs ``uvicorn tests.apps.model_app:app --workers N`` on 127.0.0.1 (the documented one line,
a real DuckDB file), keeps ``--connections`` clients sending POST /predict, and ``--runs`` times
kills the collector with SIGKILL and times, from the kill:

- ``listening``: the new collector holds the lock and listens (a connection to its API socket
  succeeds, polled every 5 ms);
- ``ready``: its engine and API run (``listening`` plus the time its log says it took from
  listening to serving);
- ``/readyz``: ``GET /monitor/readyz`` through a worker answers 200 (from the new collector),
  polled every 10 ms on new connections;
- ``/health``: ``GET /monitor/health`` through a worker names the new collector: it first flushes
  every worker and writes the captures sent again (those the dead one had not written).

Medians and the range are printed, with the target (a new collector serves within 2 s).

    python benchmarks/collector_restart.py --runs 7 --workers 4
    python benchmarks/collector_restart.py --quick          # smoke run: 2 runs, 2 workers
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.report import Figure, figures_table
from _lib.rounds import median
from _lib.servers import free_port, kill, start, stop
from _lib.servers import workdir as make_workdir

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 2.0  # a new collector serves within this long after the old one is killed
_CRED = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid
_READY = re.compile(r"ready \(pid (\d+)\): listening ([\d.]+) s and serving ([\d.]+) s")


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=10)
    except httpx.TransportError:
        return None


def _collector_pid(url: str) -> int | None:
    answer = _get(url + "/monitor/health")
    if answer is None or answer.status_code != 200:
        return None
    return answer.json()["resources"]["collector"]["pid"]


def _until_listening(path: str, old: int, since: float) -> float:
    """Seconds from ``since`` until a new collector listens on its API socket (the first of its
    two); a connection it accepts and sees closed at once is harmless."""
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            cred = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
        except OSError:
            cred = None
        finally:
            probe.close()
        if cred is not None and _CRED.unpack(cred)[0] != old:  # a new one, not the dying one
            return time.monotonic() - since
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 runs, 2 workers")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.workers, args.connections = 2, 2, 2
    folder = make_workdir(None, "inferwatch-restart-")
    db = folder / "pod.duckdb"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"INFERWATCH_DB": str(db), "INFERWATCH_COLLECTOR_LINGER": "5s",
           "INFERWATCH_SAMPLE_RATE": "1.0", "PYTHONPATH": str(ROOT)}  # fmt: skip
    server = start(
        [sys.executable, "-m", "uvicorn", "tests.apps.model_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(args.workers), "--no-access-log"],
        folder / "server.log", env, ROOT, session=True,
    )  # fmt: skip
    stopping = threading.Event()
    sent = [0, 0]  # ok, failed

    def traffic() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stopping.is_set():
                try:
                    ok = client.post("/predict", json={"instances": [{"a": 1}]}).status_code == 200
                except httpx.TransportError:
                    ok = False
                sent[0 if ok else 1] += 1

    clients: list[threading.Thread] = []
    results: list[tuple[float, float, float, float]] = []
    try:
        deadline = time.monotonic() + 60
        while _collector_pid(url) is None:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start; see " + str(folder / "server.log"))
            time.sleep(0.1)
        clients = [threading.Thread(target=traffic) for _ in range(args.connections)]
        for client in clients:
            client.start()
        collector_log = Path(str(db) + ".collector.log")
        api_socket = str(db) + ".api.sock"
        for run in range(args.runs):
            time.sleep(2.0)  # steady traffic before the kill
            old = _collector_pid(url)
            assert old is not None
            seen = len(_READY.findall(collector_log.read_text()))
            os.kill(old, signal.SIGKILL)
            killed = time.monotonic()
            listening = _until_listening(api_socket, old, killed)
            # /readyz answers from the new collector: the old one's socket no longer listens.
            while (answer := _get(url + "/monitor/readyz")) is None or answer.status_code != 200:
                if time.monotonic() - killed > 60:
                    raise SystemExit("no new collector within 60 s")
                time.sleep(0.01)
            serves = time.monotonic() - killed
            # /health first flushes every worker and writes what the dead one had not written.
            while _collector_pid(url) in (None, old):
                time.sleep(0.01)
            health = time.monotonic() - killed
            ready = _READY.findall(collector_log.read_text())[seen:]
            # The log says how long the engine took after the sockets listened.
            serving = listening + float(ready[-1][2]) - float(ready[-1][1]) if ready else math.nan
            results.append((listening, serving, serves, health))
            print(f"run {run + 1}: listening {listening:.2f} s, ready {serving:.2f} s, "
                  f"/readyz {serves:.2f} s, /health {health:.2f} s after kill -9")  # fmt: skip
    finally:
        stopping.set()
        for client in clients:
            client.join()
        try:
            stop(server, timeout=60)
        finally:
            kill(server)
    print(f"\n{args.workers} workers, {args.connections} clients, {os.cpu_count()} cores; "
          f"requests ok {sent[0]}, failed {sent[1]}")  # fmt: skip
    for index, name in enumerate(("listening", "ready", "/readyz", "/health")):
        values = [r[index] for r in results]
        print(f"{name:>10}: median {median(values):.2f} s, "
              f"range {min(values):.2f} to {max(values):.2f} s")  # fmt: skip
    figures = [
        Figure(
            f"a new collector serves after kill -9 ({name}, median), s",
            median([r[index] for r in results]),
            f"≤ {TARGET_S:g}",
            spec=".2f",
            ok=lambda x: x <= TARGET_S,
        )
        for index, name in ((2, "/readyz"), (3, "/health"))
    ]
    print("\n" + figures_table(figures, peer="peer (none run)"))


if __name__ == "__main__":
    main()
