"""Faults with real processes and real files: kill -9, full and read-only disks, broken baselines,
wall-clock steps and an upstream that restarts under load.

Each test drives the sidecar (``inferwatch sidecar``) as a process on 127.0.0.1 in front of the
test model server, and reads what it stored with DuckDB once it has stopped. Waits poll; nothing
here asserts how long something took. ``INFERWATCH_RELIABILITY_FULL=1`` runs the kill test's 20
cycles instead of the 3 that CI runs (docs/_reliability_faults.md records both).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import re
import signal
import statistics
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

from inferwatch import Engine, MonitorError, Settings
from inferwatch.middleware.baseline.build import build_baseline
from inferwatch.middleware.collector import CollectorPaths
from inferwatch.middleware.collector.election import collector_running
from inferwatch.middleware.store.writer import _BATCH_CAPTURES
from tests.conftest import ROOT, free_port, make_capture, require_tool
from tests.sidecar.conftest import ModelServer, Sidecar, start_model_server, wait_until

FULL = os.environ.get("INFERWATCH_RELIABILITY_FULL") == "1"
KILL_CYCLES = 20 if FULL else 3
WORKERS = 4
INSTANCES = 10  # per request: 4 inputs each, and one prediction each
FEATURE_ROWS = INSTANCES * 5
PREDICT = "/v1/models/m:predict"


# ------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def sidecar(
    upstream: str, db: Path, log: Path, *flags: str, env: dict[str, str] | None = None
) -> Iterator[Sidecar]:
    """``inferwatch sidecar`` in a process of its own, on free ports, writing ``db``."""
    port, admin_port = free_port(), free_port()
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferwatch", "sidecar", "--upstream", upstream,
             "--host", "127.0.0.1", "--port", str(port), "--admin-host", "127.0.0.1",
             "--admin-port", str(admin_port), "--db", str(db), "--upstream-health-path",
             "/health", "--flush-interval", "0.05", "--sample-rate", "1.0", *flags],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**_clean_environ(), **(env or {})},
        )  # fmt: skip
    running = Sidecar(process, port, admin_port, str(db), log)
    try:
        wait_until(
            lambda: (
                process.poll() is None
                and httpx.get(running.admin + "/healthz", timeout=2).status_code == 200
            ),
            timeout=60,
            what="the sidecar to start",
        )
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # A proxy killed with SIGKILL leaves its collector to write what it holds and exit.
        paths = CollectorPaths.for_db(str(db))
        wait_until(lambda: not collector_running(paths), timeout=30, what="the collector to let go")


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("INFERWATCH_", "FAKETIME"))}


def body(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    return {
        "instances": [
            {"a": rng.random(), "b": rng.random(), "c": rng.randint(0, 9), "d": rng.random()}
            for _ in range(INSTANCES)
        ]
    }


@dataclass
class Outcome:
    request_id: str
    status: int | None  # None: no HTTP answer at all
    reason: str | None  # the sidecar's X-Inferwatch-Error, or the transport error


@dataclass
class Load:
    """Clients posting predictions in a loop until stopped, keeping every outcome in order."""

    url: str
    stop_on_failure: bool = False  # a kill test's clients stop once the sidecar is gone
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for worker in range(WORKERS):
            thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._threads), "a client hung"

    def answered(self) -> list[str]:
        return [o.request_id for o in self.outcomes if o.status == 200]

    def _run(self, worker: int) -> None:
        sent = 0
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                request_id = f"w{worker}-{sent}-{os.urandom(4).hex()}"
                sent += 1
                try:
                    response = client.post(
                        PREDICT, json=body(sent), headers={"X-Request-ID": request_id}
                    )
                    if response.status_code == 200 and (
                        len(response.json()["predictions"]) != INSTANCES
                    ):
                        raise ValueError(f"a changed answer: {response.text[:200]}")
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self.outcomes.append(Outcome(request_id, None, repr(exc)))
                    if self.stop_on_failure:
                        return
                    continue
                reason = response.headers.get("x-inferwatch-error")
                self.outcomes.append(Outcome(request_id, response.status_code, reason))


def health(admin: str) -> dict[str, Any]:
    return httpx.get(admin + "/health", timeout=10).json()


def capture(admin: str) -> dict[str, Any]:
    return health(admin)["capture"]


def metric(admin: str, name: str) -> float:
    for line in httpx.get(admin + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def post(url: str, count: int, prefix: str) -> list[str]:
    """Send ``count`` predictions one by one; every one must be answered by the model."""
    ids = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(count):
            request_id = f"{prefix}-{i}"
            response = client.post(PREDICT, json=body(i), headers={"X-Request-ID": request_id})
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == INSTANCES
            ids.append(request_id)
    return ids


def stored_ids(db: str) -> set[str]:
    with duckdb.connect(db, read_only=True) as con:
        return {row[0] for row in con.execute("SELECT request_id FROM requests").fetchall()}


def settled(admin: str) -> dict[str, Any]:
    """Wait until the writer has dealt with every capture; the capture counters then."""

    def done() -> dict[str, Any] | None:
        counts = capture(admin)
        handled = counts["stored"] + counts["write_errors"] + counts["dropped"]
        return counts if counts["queue_depth"] == 0 and handled == counts["sampled"] else None

    return wait_until(done, timeout=30, what="the writer to catch up")


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    server = start_model_server()
    yield server
    server.stop()


# ------------------------------------------------------------------- 1. kill -9 under load


def test_kill_9_under_load_loses_at_most_the_last_batch(model: ModelServer, tmp_path: Path) -> None:
    """kill -9 while the writer is busy: the file opens, a restart keeps writing, and what is
    lost is only what was answered after the last committed batch."""
    db = tmp_path / "monitor.duckdb"
    log = tmp_path / "sidecar.log"
    answered_before: set[str] = set()
    sent: set[str] = set()
    ids: set[str] = set()
    losses: list[tuple[int, int, int]] = []  # (lost, pending at the kill, answered) per cycle
    for _ in range(KILL_CYCLES):
        with sidecar(model.url, db, log) as running:
            stored_at_start = capture(running.admin)["stored"]
            assert stored_at_start == 0
            with Load(running.url, stop_on_failure=True) as load:
                # Kill once batches are landing and more are queued behind them.
                wait_until(
                    lambda: capture(running.admin)["stored"] >= 60, timeout=60, what="batches"
                )
                time.sleep(random.uniform(0, 0.05))  # anywhere within one flush interval
                counted = len(load.answered())
                reported = capture(running.admin)
                running.process.kill()
                running.process.wait(30)
            assert running.process.returncode == -signal.SIGKILL
        # The file opens (DuckDB replays its write-ahead log) and holds whole requests only.
        earlier = ids
        with duckdb.connect(str(db)) as con:
            ids = {row[0] for row in con.execute("SELECT request_id FROM requests").fetchall()}
            partial = con.execute(
                "SELECT count(*) FROM (SELECT request_id FROM features GROUP BY request_id "
                f"HAVING count(*) <> {FEATURE_ROWS})"
            ).fetchone()
            unpaired = con.execute(
                "SELECT count(*) FROM requests r ANTI JOIN features f USING (request_id)"
            ).fetchone()
        assert partial == (0,) and unpaired == (0,), "a request was stored in part"
        answered = load.answered()
        sent |= {o.request_id for o in load.outcomes}
        assert ids <= sent
        assert earlier <= ids, "rows of an earlier run were lost"
        # Every batch /health called stored survived the kill.
        assert len(ids) - len(earlier) >= reported["stored"], "a stored batch was lost"
        lost = [rid for rid in answered if rid not in ids]
        # Only the tail is lost: captures queue in the order their answers went out (give or
        # take the requests in flight beside them), so every lost one was answered after the
        # last stored one was.
        position = {rid: i for i, rid in enumerate(answered)}
        first_lost = min((position[rid] for rid in lost), default=len(answered))
        assert first_lost >= len(answered) - len(lost) - WORKERS, (len(answered), lost)
        # What is lost is what was not yet committed when the kill came: the batch being
        # written and the captures queued behind it, or answered after /health was read.
        pending = reported["sampled"] - reported["stored"] - reported["write_errors"]
        assert len(lost) <= pending + (len(answered) - counted) + WORKERS, (lost, reported)
        assert len(lost) <= _BATCH_CAPTURES
        losses.append((len(lost), pending, len(answered)))
        answered_before |= set(answered) - set(lost)
    # A clean run on the same file after all the kills: nothing sampled is lost.
    with sidecar(model.url, db, log) as running:
        last = post(running.url, 20, "clean")
        assert running.terminate() == 0
    ids = stored_ids(str(db))
    assert set(last) | answered_before <= ids
    assert "Traceback" not in log.read_text(errors="replace")
    print(f"kill -9 cycles: {KILL_CYCLES}; (lost, pending, answered) each: {losses}; {len(ids)}")


# ---------------------------------------------------------- 2. full and read-only disks


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB tmpfs, so that 'disk full' and 'read-only' are the kernel's answers."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        reason = f"cannot mount a tmpfs here: {made.stderr.decode().strip()}"
        if os.environ.get("INFERWATCH_REQUIRE_TOOLS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 4096, 1):  # down to the last byte
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    return filler


def immutable(paths: list[Path], on: bool) -> None:
    """chattr +i: even root's writes to these files, open ones too, fail with EPERM."""
    for path in paths:
        if path.exists():
            subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)


def chattr_blocks_open_files(folder: Path) -> bool:
    probe = folder / "probe"
    with open(probe, "wb") as handle:
        immutable([probe], True)
        try:
            handle.write(b"x")
            handle.flush()
        except OSError:
            return True
        finally:
            immutable([probe], False)
            probe.unlink()
    return False


@pytest.mark.parametrize("when", ["at_start", "mid_run"])
@pytest.mark.parametrize("fault", ["disk_full", "read_only"])
def test_full_or_read_only_store_never_fails_traffic_and_recovers(
    model: ModelServer, tmp_path: Path, small_disk: Path, fault: str, when: str
) -> None:
    if fault == "read_only" and when == "mid_run":
        # A mounted filesystem holding an open file cannot be remounted read-only; chattr +i
        # on the files and their folder makes even open files read-only to root on ext4.
        require_tool("chattr")
        folder = tmp_path / "ro"
        folder.mkdir()
        if not chattr_blocks_open_files(folder):
            pytest.skip("chattr +i does not stop writes to open files on this filesystem")
    else:
        folder = small_disk
    db = folder / "monitor.duckdb"
    files = [db, Path(f"{db}.wal"), folder]
    log = tmp_path / "sidecar.log"
    filler: Path | None = None
    expected = {"disk_full": "No space left on device", "read_only": "Read-only file system"}
    if fault == "read_only" and when == "mid_run":
        expected["read_only"] = "Operation not permitted"

    def break_store() -> None:
        nonlocal filler
        if fault == "disk_full":
            filler = fill(folder)
        elif when == "at_start":
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            immutable(files, True)

    def mend_store() -> None:
        if fault == "disk_full":
            assert filler is not None
            filler.unlink()
        elif when == "at_start":
            subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
        else:
            immutable(files, False)

    before: list[str] = []
    if when == "at_start":
        if fault == "read_only":  # a store that exists, on a volume mounted read-only
            engine = Engine(Settings.load({"db": str(db)}, environ={}))
            engine.start()
            before = [f"before-{i}" for i in range(10)]
            for request_id in before:
                engine.queue.put(make_capture(request_id, json.dumps(body(0)).encode()))
            engine.stop()
        break_store()
    # A volume read-only from the start has no room for a collector's lock and sockets beside
    # the store either: the proxy's own engine is what reports the store and recovers there.
    flags = ("--sidecar-collector", "false") if fault == "read_only" and when == "at_start" else ()
    try:
        with sidecar(model.url, db, log, "--check-interval", "0.2", *flags) as running:
            if when == "mid_run":
                before = post(running.url, 10, "before")
                wait_until(lambda: capture(running.admin)["stored"] == 10, what="10 stored")
                break_store()
            # Model traffic goes on, every answer the model's own, while the failure shows.
            during = 0
            while capture(running.admin)["write_errors"] == 0:
                during += len(post(running.url, 5, f"during{during}"))
                assert during < 2_000, "the broken store was never noticed"
            ready = httpx.get(running.admin + "/readyz", timeout=10)
            assert ready.status_code == 503
            reason = ready.json()["reasons"][0]
            assert reason.startswith("the log store is unavailable"), reason
            assert expected[fault] in reason, reason
            report = health(running.admin)
            assert report["status"] != "ok"
            assert expected[fault] in report["capture"]["last_error"]
            assert metric(running.admin, "inferwatch_capture_write_errors_total") >= 1
            post(running.url, 5, "still")  # and traffic still flows
            mend_store()
            filler = None
            # Writing resumes on its own: the store is opened again, and new rows land.
            wait_until(
                lambda: (
                    post(running.url, 1, f"probe{time.monotonic_ns()}")
                    and httpx.get(running.admin + "/readyz", timeout=10).status_code == 200
                ),
                timeout=60,
                what="the store to open again",
            )
            after = post(running.url, 10, "after")
            counts = settled(running.admin)
            assert counts["write_errors"] >= 1 and counts["dropped"] == 0
            assert health(running.admin)["capture"]["last_error"] is None
            assert running.terminate() == 0
    finally:
        if filler is not None or fault == "read_only":
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                mend_store()
    ids = stored_ids(str(db))
    assert set(before) | set(after) <= ids
    assert len(ids) == counts["stored"] + (len(before) if when == "at_start" else 0)
    # The checks that could not run while the store was away (every 0.2 s) said so in a line
    # per reason, not a traceback each time.
    output = log.read_text(errors="replace")
    assert "Traceback" not in output
    assert output.count("inferwatch job checks failed") <= 6, output


def test_a_check_on_a_store_that_just_failed_says_so(tmp_path: Path) -> None:
    """DuckDB can invalidate the database under a skew check before the writer notices (seen
    in the read-only run above): the check reports the store, it does not raise DuckDB's error."""
    require_tool("chattr")
    folder = tmp_path / "ro"
    folder.mkdir()
    if not chattr_blocks_open_files(folder):
        pytest.skip("chattr +i does not stop writes to open files on this filesystem")
    db = folder / "monitor.duckdb"
    files = [db, Path(f"{db}.wal"), folder]
    engine = Engine(Settings.load({"db": str(db), "flush_interval": 0.05}, environ={}))
    engine.start()
    try:
        for i in range(10):
            engine.queue.put(make_capture(f"r{i}", json.dumps(body(i)).encode()))
        assert engine.flush()
        store = engine.writer.store
        assert store is not None
        immutable(files, True)
        try:
            # A checkpoint that cannot write invalidates the database, here in this thread.
            with pytest.raises(duckdb.FatalException):
                store.writer.execute("CHECKPOINT")
            with pytest.raises(MonitorError, match="Checking the log store failed"):
                engine.run_checks()
            assert engine.drift.history(None, 10) == []
        finally:
            immutable(files, False)

        def stored_again() -> bool:
            engine.queue.put(make_capture(f"after{time.monotonic_ns()}", b'{"a": 1}'))
            engine.flush()
            return engine.writer.store is not None and not engine.readiness_problems()

        wait_until(stored_again, what="the store to open again")
        engine.queue.put(make_capture("after", b'{"a": 1}'))
        assert engine.flush()
        assert engine.run_checks()["status"] == "no_baseline"
    finally:
        engine.stop()
    assert "after" in stored_ids(str(db))


# ---------------------------------------------------------------- 3. broken baseline files


@pytest.fixture(scope="module")
def good_baseline(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("baseline")
    rng = random.Random(7)
    data = folder / "train.csv"
    data.write_text(
        "a,b,c,d\n"
        + "".join(
            f"{rng.random()},{rng.random()},{rng.randint(0, 9)},{rng.random()}\n"
            for _ in range(2_000)
        )
    )
    build_baseline(str(data), out=str(folder / "baseline.json"))
    return (folder / "baseline.json").read_bytes()


def _garbage(path: Path, good: bytes) -> None:
    path.write_bytes(random.Random(1).randbytes(len(good)))


BREAKS = {
    "deleted": (lambda path, good: path.unlink(), "No such file or directory"),
    "truncated": (lambda path, good: path.write_bytes(good[: len(good) // 2]), "not valid JSON"),
    "garbage bytes": (_garbage, "not valid JSON"),
    "a JSON list": (lambda path, good: path.write_text("[1, 2, 3]"), "not a JSON object"),
    "a wrong shape": (
        lambda path, good: path.write_text(
            json.dumps({**json.loads(good), "features": {"a": {"kind": "numeric", "edges": "x"}}})
        ),
        "not a valid baseline",
    ),
    "moved away": (lambda path, good: path.rename(path.with_suffix(".away")), "No such file"),
}


def test_broken_baseline_keeps_the_last_good_one(
    model: ModelServer, tmp_path: Path, good_baseline: bytes
) -> None:
    path = tmp_path / "baseline.json"
    path.write_bytes(good_baseline)
    rows = json.loads(good_baseline)["rows"]
    log = tmp_path / "sidecar.log"
    flags = ("--baseline", str(path), "--check-interval", "0.2", "--min-rows", "20")
    with sidecar(model.url, tmp_path / "monitor.duckdb", log, *flags) as running:
        post(running.url, 10, "warm")

        def drift() -> dict[str, Any]:
            return httpx.get(running.admin + "/drift", timeout=10).json()

        wait_until(lambda: drift()["status"] in ("ok", "alert"), what="a first verdict")
        checks = metric(running.admin, "inferwatch_drift_checks_total")
        for name, (damage, why) in BREAKS.items():
            damage(path, good_baseline)
            report = wait_until(
                lambda: (r := drift())["baseline"].get("error") and r, what=f"{name} to show"
            )
            error = report["baseline"]["error"]
            assert why in error and error.endswith("The last good baseline stays in force."), (
                name,
                error,
            )
            # Still judged against the last good baseline, and traffic is untouched.
            assert report["status"] in ("ok", "alert") and report["baseline"]["rows"] == rows
            assert report["features"], name
            post(running.url, 5, f"during-{name}")
            ready = httpx.get(running.admin + "/readyz", timeout=10)
            assert ready.status_code == 503 and error in ready.json()["reasons"], name
            asked = httpx.post(running.admin + "/drift/check", timeout=30)
            assert asked.status_code == 200 and asked.json()["baseline"]["error"] == error
            # Putting the good file back (for "moved away": the same file, renamed back) heals.
            if name == "moved away":
                path.with_suffix(".away").rename(path)
            else:
                path.write_bytes(good_baseline)
            wait_until(
                lambda: (
                    "error" not in drift()["baseline"]
                    and httpx.get(running.admin + "/readyz", timeout=10).status_code == 200
                ),
                what=f"recovery from {name}",
            )
        assert metric(running.admin, "inferwatch_drift_checks_total") > checks
        assert running.terminate() == 0
    output = log.read_text(errors="replace")
    assert "Traceback" not in output and "job checks failed" not in output


# ------------------------------------------------------------------ 4. wall-clock steps


def libfaketime() -> str:
    require_tool("faketime")  # Debian's faketime brings libfaketime
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    found += glob.glob("/usr/lib/faketime/libfaketime.so.1")
    if not found:
        pytest.fail("faketime is installed but libfaketime.so.1 is not where Debian puts it")
    return found[0]


def test_wall_clock_steps_back_and_forward(model: ModelServer, tmp_path: Path) -> None:
    """The sidecar's wall clock (not its monotonic one, as when NTP steps the clock) goes a day
    forward, then an hour behind real time, then back to real time."""
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    env = {
        "LD_PRELOAD": libfaketime(),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        # Re-read the offset once a second: libfaketime resets its buffer to "+0" before each
        # re-read, without a lock, so re-reading on every call lets a racing thread see real time.
        "FAKETIME_CACHE_DURATION": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    db = tmp_path / "monitor.duckdb"
    log = tmp_path / "sidecar.log"
    # The proxy's own engine: under libfaketime, time.sleep fails (EINVAL) in the processes that
    # start a collector and its standby. The engine's clock handling is the same in both.
    flags = ("--retention", "30m", "--resource-interval", "0.2", "--check-interval", "0.2",
             "--sidecar-collector", "false")  # fmt: skip
    steps = [("+1d", "forward", 86400), ("-1h", "back", 90000), ("+0", "forward", 3600)]
    sent: dict[str, list[str]] = {}

    def logged_steps(direction: str) -> list[float]:
        pattern = rf"wall clock stepped {direction} by (\d+) s"
        return [float(s) for s in re.findall(pattern, log.read_text(errors="replace"))]

    with sidecar(model.url, db, log, *flags, env=env) as running:
        sent["start"] = post(running.url, 20, "start")
        for offset, direction, size in steps:
            checks = metric(running.admin, "inferwatch_drift_checks_total")
            before = len(logged_steps(direction))
            clock.write_text(offset + "\n")
            # Within a minute of the step: the offset is re-read once a second.
            wait_until(
                lambda d=direction, n=before, size=size: any(
                    abs(step - size) < 60 for step in logged_steps(d)[n:]
                ),
                what=offset,
            )
            sent[offset] = post(running.url, 20, f"clock{offset}")
            # Periodic jobs go on (their periods run on the monotonic clock).
            wait_until(
                lambda least=checks + 2: (
                    metric(running.admin, "inferwatch_drift_checks_total") > least
                ),
                what="more checks",
            )
            # /health's windows also count on the monotonic clock: every request so far is in
            # the last 10 minutes, however the wall clock moved.
            report = httpx.get(running.admin + "/health?window=10m", timeout=10).json()
            total = sum(len(ids) for ids in sent.values())
            assert report["requests"]["count"] >= total, report["requests"]
            assert 0 < report["covered_s"] <= 600
            assert all(v is None or v >= 0 for v in report["latency_ms"].values())
            assert all(v is None or v >= 0 for v in report["ttfb_ms"].values())
        assert running.process.poll() is None
        counts = settled(running.admin)
        assert running.terminate() == 0
    with duckdb.connect(str(db), read_only=True) as con:
        rows = dict(con.execute("SELECT request_id, epoch(ts) FROM requests").fetchall())
        negative = con.execute(
            "SELECT count(*) FROM requests WHERE latency_ms < 0 OR ttfb_ms < 0"
        ).fetchone()
        series = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE p50_ms < 0 OR max_ms < 0 OR interval_s <= 0)"
            " FROM efficiency"
        ).fetchone()
    now = time.time()
    # Retention (30 min) kept every row: those stamped a day ahead, and those stamped an hour
    # behind when the clock came back, were all written seconds ago.
    assert set(rows) == {rid for ids in sent.values() for rid in ids}
    assert counts["rows_expired"] == 0
    # Medians, not extremes: with FAKETIME_NO_CACHE, libfaketime re-reads the offset into one
    # buffer that it first resets to "+0", without a lock, so a clock call racing another
    # thread's re-read now and then sees real time (seen under CI's load, never here alone).
    ahead = statistics.median(rows[rid] for rid in sent["+1d"])
    behind = statistics.median(rows[rid] for rid in sent["-1h"])
    assert ahead > now + 23 * 3600, "libfaketime did not act"
    assert behind < now - 3500
    assert negative == (0,)
    assert series[0] > 0 and series[1] == 0
    output = log.read_text(errors="replace")
    assert "Traceback" not in output


# --------------------------------------------------- 5. the upstream restarting under load


def test_upstream_restarts_under_load(tmp_path: Path) -> None:
    upstream = start_model_server()
    db = tmp_path / "monitor.duckdb"
    log = tmp_path / "sidecar.log"
    restarts = 4
    try:
        with sidecar(upstream.url, db, log, "--upstream-timeout", "20s") as running:
            with Load(running.url) as load:
                for restart in range(restarts):
                    served = len(load.answered())
                    wait_until(
                        lambda least=served + 50: len(load.answered()) >= least, what="traffic"
                    )
                    if restart % 2:
                        upstream.stop()  # SIGTERM: uvicorn finishes what it has, then exits
                    else:
                        upstream.process.kill()
                        upstream.process.wait()
                    failed = sum(o.status != 200 for o in load.outcomes)
                    wait_until(
                        lambda least=failed + 5: (
                            sum(o.status != 200 for o in load.outcomes) >= least
                        ),
                        what="answers while the model is down",
                    )
                    upstream = start_model_server(port=upstream.port)
                served = len(load.answered())
                wait_until(lambda: len(load.answered()) >= served + 50, what="recovery")
            outcomes = load.outcomes
            ready = wait_until(
                lambda: httpx.get(running.admin + "/readyz", timeout=10).status_code == 200,
                what="/readyz",
            )
            assert ready
            counts = settled(running.admin)
            assert running.terminate() == 0
    finally:
        upstream.stop()
    no_answer = [o for o in outcomes if o.status is None]
    assert not no_answer, no_answer[:5]
    odd = [
        o for o in outcomes if o.status != 200 and (o.status not in (502, 503, 504) or not o.reason)
    ]
    assert not odd, odd[:5]
    failures = [o for o in outcomes if o.status != 200]
    assert len(failures) >= restarts * 5
    # Every request was sampled, and the store holds exactly what was sampled and not dropped.
    assert counts["sampled"] == len(outcomes)
    assert counts["write_errors"] == 0
    with duckdb.connect(str(db), read_only=True) as con:
        stored = dict(con.execute("SELECT request_id, status FROM requests").fetchall())
    assert len(stored) == counts["sampled"] - counts["dropped"] == counts["stored"]
    assert stored == {o.request_id: o.status for o in outcomes}
    assert "Traceback" not in log.read_text(errors="replace")
    print(
        f"upstream restarts: {restarts}, requests: {len(outcomes)}, "
        f"non-2xx: {len(failures)} {sorted({(o.status, (o.reason or '')[:40]) for o in failures})}"
    )


# ------------------------------------------- found here: the alert rules run when a check fails


def test_a_failing_store_still_reaches_the_alert_rules(tmp_path: Path) -> None:
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"not a duckdb file" * 1000)
    values = {"db": str(broken), "alert_for": 1, "alert_rules": "capture_drops"}
    engine = Engine(Settings.load(values, environ={}))
    engine.start()
    try:
        for i in range(20):
            engine.queue.put(make_capture(f"r{i}", b'{"a": 1}'))
        assert engine.flush()
        assert engine.counters.write_errors == 20
        with contextlib.suppress(MonitorError):
            engine.run_checks()
        assert [alert["rule"] for alert in engine.alerts.active()] == ["capture_drops"]
    finally:
        engine.stop()
