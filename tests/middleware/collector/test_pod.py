"""One collector per pod, with real multi-worker servers on 127.0.0.1 and real HTTP traffic.

Every worker hands its requests to one collector process; every worker answers the monitor API
with the collector's figures. Faults: a worker or the collector killed mid-traffic, and SIGTERM
of the whole server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import httpx
import psutil
import pytest

from inferwatch.middleware.baseline.build import build_baseline
from inferwatch.middleware.collector.election import hold_lock
from inferwatch.middleware.collector.paths import CollectorPaths
from tests.conftest import ROOT, free_port, wait_collector_gone, wait_until
from tests.middleware.collector.servers import LOCK_ERROR, Server, load, serve, stop

REQUESTS = 10_000


def _requests_total(metrics: str) -> int:
    total = 0
    for line in metrics.splitlines():
        if line.startswith("inferwatch_requests_total{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


@pytest.mark.parametrize(
    ("kind", "extra", "rate"),
    [
        ("uvicorn", (), 1.0),
        ("gunicorn", (), 0.0),
        ("gunicorn", ("--preload",), 1.0),
        ("gunicorn", ("--max-requests", "700", "--max-requests-jitter", "100"), 1.0),
    ],
    ids=["uvicorn-workers", "gunicorn-rate-0", "gunicorn-preload", "gunicorn-max-requests"],
)
def test_every_worker_is_monitored_whole(
    kind: str, extra: tuple[str, ...], rate: float, tmp_path: Path
) -> None:
    env = {"INFERWATCH_SAMPLE_RATE": str(rate)}
    if "--max-requests" in extra:
        # Workers reach their limit together and their replacements take seconds to boot: the
        # collector's default linger outlasts that, as it must.
        env["INFERWATCH_COLLECTOR_LINGER"] = "10s"
    with serve(kind, tmp_path, *extra, env=env) as server:
        ready: list[int | str] = []
        done = threading.Event()
        recycled = "--max-requests" in extra

        def poll_ready() -> None:
            while not done.is_set():
                try:
                    ready.append(server.monitor("/readyz").status_code)
                except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                    # A worker that max_requests retires resets what it accepted and did not
                    # read (gunicorn's doing, retried as the load does); any other is a failure.
                    if not recycled:
                        ready.append(repr(exc))
                except httpx.TransportError as exc:
                    ready.append(repr(exc))
                time.sleep(0.05)

        poller = threading.Thread(target=poll_ready)
        poller.start()
        try:
            traffic = load(server.url, REQUESTS, retry_resets=recycled)
        finally:
            done.set()
            poller.join()
        assert traffic.failed == []
        assert len(set(traffic.ok)) == REQUESTS
        assert ready and set(ready) == {200}
        # Read your writes: every response already sent is counted, by whichever worker answers.
        for _ in range(4):
            health = server.monitor("/health").json()
            assert health["requests"]["count"] == REQUESTS
            assert health["requests"]["by_status"] == {"200": REQUESTS}
        capture = health["capture"]
        sampled = REQUESTS if rate == 1.0 else 0
        assert (capture["sampled"], capture["stored"], capture["dropped"]) == (sampled, sampled, 0)
        assert capture["requests_dropped"] == 0
        workers = health["resources"]["workers"]
        if "--max-requests" not in extra:  # else some may be booting their replacement now
            assert len(workers) == 4 and all(w["rss_bytes"] for w in workers)
        assert health["resources"]["collector"]["pid"] not in {w["pid"] for w in workers}
        report = server.monitor("/drift/check", "POST").json()
        assert report["window"]["rows"] == sampled  # one input row per request
        assert _requests_total(server.monitor("/metrics").text) == REQUESTS
    logs = server.logs()
    assert LOCK_ERROR not in logs
    if "--max-requests" in extra:
        assert "Maximum request limit" in logs  # workers were replaced mid-run


def test_sigterm_of_the_whole_server_writes_everything_sampled(tmp_path: Path) -> None:
    served: list[str] = []
    with serve("uvicorn", tmp_path, env={"INFERWATCH_FLUSH_INTERVAL": "5s"}) as server:
        stopping = threading.Event()

        def send() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stopping.is_set():
                    try:
                        response = client.post("/predict", json={"instances": [{"a": 1}]})
                    except httpx.TransportError:
                        return
                    if response.status_code == 200:
                        served.append(response.headers["x-request-id"])

        senders = [threading.Thread(target=send) for _ in range(6)]
        for sender in senders:
            sender.start()
        wait_until(lambda: len(served) >= 2_000)
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(60)
        stopping.set()
        for sender in senders:
            sender.join()
    wait_collector_gone(server.db)
    with duckdb.connect(server.db, read_only=True) as con:
        stored = {row[0] for row in con.execute("SELECT request_id FROM requests").fetchall()}
    assert len(served) >= 2_000
    assert set(served) <= stored
    assert LOCK_ERROR not in server.logs()


def test_kill_9_of_one_worker_leaves_the_others_monitored(tmp_path: Path) -> None:
    with serve("gunicorn", tmp_path) as server:
        workers = psutil.Process(server.process.pid).children()
        victim = workers[0].pid

        def kill_at(number: int) -> None:
            if number == 3_000:
                os.kill(victim, signal.SIGKILL)

        traffic = load(server.url, 6_000, on_progress=kill_at)
        # A keep-alive connection to the killed worker breaks once; nothing else fails.
        assert len(traffic.failed) <= 4
        health = server.monitor("/health").json()
        counted = health["requests"]["count"]
        # At most what the killed worker was serving or had not yet handed over is missing.
        assert 0 <= len(traffic.ok) - counted <= 4 * 8
        assert victim not in {w["pid"] for w in health["resources"]["workers"]}
        more = load(server.url, 1_000)
        assert more.failed == []
        assert server.monitor("/health").json()["requests"]["count"] == counted + 1_000
    assert LOCK_ERROR not in server.logs()


def test_kill_9_of_the_collector_never_touches_traffic(tmp_path: Path) -> None:
    killed: dict[str, float] = {}
    with serve("uvicorn", tmp_path) as server:
        first = server.monitor("/health").json()["resources"]["collector"]["pid"]
        standby = _standby(server, first)

        def kill_at(number: int) -> None:
            if number == 2_000:
                # Everything before this call is in the store once /health answers.
                killed["stored"] = server.monitor("/health").json()["capture"]["stored"]
                os.kill(first, signal.SIGKILL)
                killed["at"] = time.monotonic()

        def watch() -> None:
            wait_until(lambda: "at" in killed, 120)
            # Served by the new collector: /readyz through a worker is 200, and /health (which
            # reads through every worker's barrier) names a collector that is not the old one.
            while not _serves_without(server, first):
                time.sleep(0.02)
            killed["ready"] = time.monotonic()

        watcher = threading.Thread(target=watch)
        watcher.start()
        traffic = load(server.url, 6_000, on_progress=kill_at)
        watcher.join(60)
        assert traffic.failed == []  # no request failed on the collector's death
        assert "ready" in killed
        print(f"a new collector served {killed['ready'] - killed['at']:.2f} s after kill -9")
        health = server.monitor("/health").json()
        second = health["resources"]["collector"]["pid"]
        assert second == standby  # the standby took over
        capture = health["capture"]
        assert _standby(server, second) not in (first, second)  # and has one of its own
        stop(server)
    # A collector that stops on purpose stops its standby: nothing waits on the store.
    assert not _standby_waiting(CollectorPaths.for_db(server.db))
    with duckdb.connect(server.db, read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM requests").fetchone()[0]
    assert killed["stored"] >= 1_000
    assert killed["stored"] <= stored <= len(traffic.ok)
    # The new collector reports what the workers could not hand over while it was away.
    assert capture["dropped"] == capture["sampled"] - capture["stored"] - capture["queue_depth"]
    assert LOCK_ERROR not in server.logs()


def test_counts_and_captures_outlive_kill_9_of_the_collector(tmp_path: Path) -> None:
    """Killed mid-traffic, with one batch written and confirmed and the next not yet written:
    the next collector counts both and the requests after, and the store holds every capture
    once."""
    env = {"INFERWATCH_SAMPLE_RATE": "1.0", "INFERWATCH_FLUSH_INTERVAL": "2s"}
    with serve("uvicorn", tmp_path, env=env) as server:
        first = server.monitor("/health").json()["resources"]["collector"]["pid"]
        written = load(server.url, 1_000)
        # Written through the barrier; each worker hears so within milliseconds, well before
        # the next batch ends.
        assert server.monitor("/health").json()["capture"]["stored"] == 1_000
        unwritten = load(server.url, 1_000)  # within the flush interval: mostly not written
        os.kill(first, signal.SIGKILL)
        after = load(server.url, 1_000)
        assert written.failed == unwritten.failed == after.failed == []
        wait_until(lambda: _serves_without(server, first))
        health = server.monitor("/health").json()
        requests, capture = health["requests"], health["capture"]
        # Nothing counted twice, nothing lost uncounted; what was dropped is reported.
        assert requests["count"] + capture["requests_dropped"] == 3_000
        assert requests["by_status"] == {"200": requests["count"]}
        # The confirmed batch is counted from what the workers remembered of it.
        assert requests["from_earlier_collectors"] >= 1_000
        dropped = capture["dropped"]
    wait_collector_gone(server.db)
    with duckdb.connect(server.db, read_only=True) as con:
        ids = [row[0] for row in con.execute("SELECT request_id FROM requests").fetchall()]
    assert len(ids) == len(set(ids))  # batches sent again were not written twice
    sent = {*written.ok, *unwritten.ok, *after.ok}
    assert set(ids) <= sent
    assert len(sent - set(ids)) == dropped
    assert LOCK_ERROR not in server.logs()


def _standby_waiting(paths: CollectorPaths) -> bool:
    fd = hold_lock(paths.standby_lock)
    if fd is None:
        return True
    os.close(fd)
    return False


def _standby(server: Server, collector: int) -> int:
    """The pid of the collector's standby, once it waits on the store's lock."""
    paths = CollectorPaths.for_db(server.db)
    wait_until(lambda: _standby_waiting(paths), 60)
    children = psutil.Process(collector).children()
    assert len(children) == 1 and children[0].cmdline()[-1] == "--standby"
    return children[0].pid


def _serves_without(server: Server, old_pid: int) -> bool:
    if server.monitor("/readyz").status_code != 200:
        return False
    health = server.monitor("/health")
    return health.status_code == 200 and health.json()["resources"]["collector"]["pid"] != old_pid


def test_a_collector_started_by_hand_is_used_not_duplicated(tmp_path: Path) -> None:
    db = str(tmp_path / "pod.duckdb")
    admin = free_port()
    collector = subprocess.Popen(
        [sys.executable, "-m", "inferwatch.middleware.collector", "--db", db,
         "--admin-port", str(admin), "--flush-interval", "0.1s"],
        cwd=ROOT,
    )  # fmt: skip
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{admin}/readyz"))
        with serve("uvicorn", tmp_path, own_collector=False) as server:
            traffic = load(server.url, 500)
            assert len(traffic.ok) == 500
            via_app = server.monitor("/health").json()
            via_admin = httpx.get(f"http://127.0.0.1:{admin}/health").json()
            assert via_app["resources"]["collector"]["pid"] == collector.pid
            assert via_app["requests"]["count"] == via_admin["requests"]["count"] == 500
        # The server has gone; a collector started by hand stays until SIGTERM.
        assert collector.poll() is None
        assert _answers(f"http://127.0.0.1:{admin}/readyz")
        _commands_work_beside_the_collector(db, traffic.ok[:10], tmp_path)
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(30) == 0
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM requests").fetchone()[0] == 500


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _inferwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferwatch", *args], cwd=ROOT, capture_output=True, text=True
    )


def _commands_work_beside_the_collector(db: str, request_ids: list[str], folder: Path) -> None:
    """export, check and labels import while the collector holds the store: no lock error."""
    exported = _inferwatch("export", "--db", db, "--out", str(folder / "out"))
    assert exported.returncode == 0, exported.stderr
    assert "requests.parquet: 500 rows" in exported.stdout
    training = folder / "training.jsonl"
    training.write_text("".join(f'{{"a": {i % 7}}}\n' for i in range(300)))
    build_baseline(str(training), out=str(folder / "baseline.json"))
    checked = _inferwatch("check", "--db", db, "--baseline", str(folder / "baseline.json"))
    assert checked.returncode in (0, 1), checked.stderr
    assert "500 rows" in checked.stdout
    labels = folder / "labels.csv"
    labels.write_text("request_id,label\n" + "".join(f"{rid},1\n" for rid in request_ids))
    imported = _inferwatch("labels", "import", str(labels), "--db", db)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(f"{len(request_ids)} labels accepted, {len(request_ids)}")
    for result in (exported, checked, imported):
        assert LOCK_ERROR not in result.stdout + result.stderr
