"""How soon a new collector serves after ``kill -9`` of the running one, mid-traffic.

Runs ``uvicorn tests.apps.model_app:app --workers N`` on 127.0.0.1 (the documented one line,
a real DuckDB file), keeps ``--connections`` clients sending POST /predict, and ``--runs`` times
kills the collector with SIGKILL and times, from the kill:

- ``listening``: the new collector holds the lock and listens on both sockets (its log says how
  long after its own start; added to the time its process took to appear);
- ``ready``: its engine and API run (the log's "serving" figure, the same way);
- ``serves``: ``GET /monitor/readyz`` through a worker answers 200 and ``/monitor/health`` names
  a new collector pid, polled every 10 ms on new connections.

Medians and the range are printed, with the target (a new collector serves within 2 s).

    python benchmarks/collector_restart.py --runs 7 --workers 4
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
_READY = re.compile(r"ready \(pid (\d+)\): listening ([\d.]+) s and serving ([\d.]+) s")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="inferwatch-restart-"))
    db = folder / "pod.duckdb"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INFERWATCH_DB": str(db), "INFERWATCH_COLLECTOR_LINGER": "5s",
           "INFERWATCH_SAMPLE_RATE": "1.0", "PYTHONPATH": str(ROOT)}  # fmt: skip
    log = open(folder / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.apps.model_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(args.workers), "--no-access-log"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
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
    results: list[tuple[float, float, float]] = []
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
        for run in range(args.runs):
            time.sleep(2.0)  # steady traffic before the kill
            old = _collector_pid(url)
            assert old is not None
            seen = len(_READY.findall(collector_log.read_text()))
            os.kill(old, signal.SIGKILL)
            killed = time.monotonic()
            while True:
                answer = _get(url + "/monitor/readyz")
                if answer is not None and answer.status_code == 200:
                    new = _collector_pid(url)
                    if new is not None and new != old:
                        break
                if time.monotonic() - killed > 60:
                    raise SystemExit("no new collector within 60 s")
                time.sleep(0.01)
            serves = time.monotonic() - killed
            try:
                created: float | None = psutil.Process(new).create_time()
            except psutil.Error:  # gone already: the figure is left out
                created = None
            ready = _READY.findall(collector_log.read_text())[seen:]
            listening = serving = float("nan")
            if ready and created is not None:
                appeared = created - (time.time() - (time.monotonic() - killed))
                listening = appeared + float(ready[-1][1])
                serving = appeared + float(ready[-1][2])
            results.append((listening, serving, serves))
            print(f"run {run + 1}: listening {listening:.2f} s, ready {serving:.2f} s, "
                  f"serves through a worker {serves:.2f} s after kill -9")  # fmt: skip
    finally:
        stopping.set()
        for client in clients:
            client.join()
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        log.close()
    print(f"\n{args.workers} workers, {args.connections} clients, {os.cpu_count()} cores; "
          f"requests ok {sent[0]}, failed {sent[1]}")  # fmt: skip
    for index, name in enumerate(("listening", "ready", "serves")):
        values = [r[index] for r in results]
        print(f"{name:>10}: median {statistics.median(values):.2f} s, "
              f"range {min(values):.2f} to {max(values):.2f} s")  # fmt: skip
    print("target: a new collector serves within 2 s")


if __name__ == "__main__":
    main()
