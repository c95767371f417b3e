"""The soak harness: a model server, the sidecar in front of it, load, and what must hold after.

``benchmarks/soak.py`` (30 minutes) and ``tests/reliability/test_load.py`` (2 minutes in CI) both
call :func:`run_soak`. It:

1. writes representative reference data (JSON lines of the same 10-feature records the traffic
   carries, with the model's prediction) and builds a baseline from it with
   ``inferwatch baseline build``;
2. starts a small model server (:func:`create_model_app`: a KServe V1 JSON route,
   ``POST /v1/models/churn:predict`` with ``{"instances": [...]}``, a logistic model,
   ``{"predictions": [...]}`` back) under uvicorn;
3. starts ``inferwatch sidecar`` in front of it with ``--sample-rate 1.0``, ``--check-interval
   10s`` and the baseline;
4. drives load through the sidecar's proxy port, closed-loop (as fast as ``connections``
   keep-alive connections get answers: the highest rate the machine gives) or paced at ``rate``,
   with this module's own asyncio load generator (``python -m tests.reliability._soak load``,
   which counts every request it sends and every answer, and lets in-flight requests finish at
   the end) or with wrk;
5. samples every few seconds: the sidecar's RSS and CPU time, ``/health`` capture counters, the
   load generator's counts, the model server's count, and the skew checks run;
6. at the end waits for the writer to catch up, sends SIGTERM, opens the DuckDB file and
   compares what is stored with what was sampled, and fits the sidecar's RSS over time.

:func:`verdicts` turns a result into named pass/fail lines; the test asserts them, the benchmark
prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._lib.load import write_lua  # the benchmarks' wrk script
from benchmarks._lib.records import make_record  # the benchmarks' churn records
from benchmarks._lib.servers import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
ROUTE = "/v1/models/churn:predict"
FEATURES = 10  # per record
_CHECKS_METRIC = re.compile(r"^inferwatch_drift_checks_total (\S+)$", re.MULTILINE)
_CAPTURE_METRIC = re.compile(r"^inferwatch_capture_(\w+)_total (\S+)$", re.MULTILINE)

# --------------------------------------------------------------------------- the model


def score(record: dict[str, Any]) -> float:
    """The model: a logistic churn score of one record."""
    z = -1.2 + 0.015 * (record["age"] - 45)
    z -= 0.25 * math.log1p(max(float(record["income"]), 0.0) / 10_000)
    z += -0.004 * record["tenure_months"] - 0.003 * (record["credit_score"] - 650)
    z += 1.1 * record["utilization"] - (0.2 if record["is_active"] else 0.0)
    return round(1.0 / (1.0 + math.exp(-z)), 6)


def create_model_app() -> Any:
    """The model server (a uvicorn ``--factory``): a KServe V1 JSON route, health and a count.

    A raw ASGI app, so that the model costs little CPU and the sidecar is what the load finds.
    ``GET /_count`` answers how many predictions it has served.
    """
    import orjson

    served = [0]

    async def read_body(receive: Any) -> bytes:
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def answer(send: Any, status: int, payload: Any) -> None:
        body = orjson.dumps(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == ROUTE and method == "POST":
            try:
                instances = orjson.loads(await read_body(receive))["instances"]
                predictions = [score(record) for record in instances]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                await answer(send, 400, {"error": f"bad request: {exc}"})
                return
            served[0] += 1
            await answer(send, 200, {"predictions": predictions})
        elif path in ("/health", "/v2/health/ready"):
            await answer(send, 200, {"ready": True})
        elif path == "/_count":
            await answer(send, 200, {"served": served[0]})
        else:
            await answer(send, 404, {"error": "not found"})

    return app


def make_bodies(count: int, batch: int, seed: int = 7) -> list[bytes]:
    """``count`` distinct ``{"instances": [...]}`` bodies of ``batch`` records each."""
    rng = random.Random(seed)
    return [
        json.dumps({"instances": [make_record(rng) for _ in range(batch)]}).encode()
        for _ in range(count)
    ]


def write_reference(path: Path, rows: int, seed: int = 3) -> None:
    """Reference data as JSON lines: the records traffic carries, with the model's prediction."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(rows):
            record = make_record(rng)
            record["prediction"] = score(record)
            handle.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------- load generator

_BUCKETS_PER_E = 50  # latency histogram: about 2 % wide buckets on a log scale of microseconds


@dataclass
class LoadStats:
    """What the load generator did: every request sent, every answer, latency percentiles."""

    sent: int = 0
    answered: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    connections: int = 0
    rate: float | None = None
    tool: str = "python"
    in_flight_cut: int | None = None  # wrk only: requests cut at the end, unknown to it

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.by_status.items() if not status.startswith("2"))

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def per_second(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


class _Histogram:
    """Latencies in log-scale buckets: fixed memory for any number of requests."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        micros = max(seconds * 1e6, 1.0)
        index = int(math.log(micros) * _BUCKETS_PER_E)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.total += 1
        if seconds > self.max_s:
            self.max_s = seconds

    def percentile(self, share: float) -> float | None:
        if not self.total:
            return None
        rank = share * self.total
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return math.exp((index + 0.5) / _BUCKETS_PER_E) / 1000.0  # ms
        return self.max_s * 1000.0


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends a request and waits for its answer."""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP: {exc}"))

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def request(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter


async def _drive(
    port: int,
    bodies: list[bytes],
    seconds: float,
    connections: int,
    rate: float | None,
    timeout: float,
    progress: Callable[[dict[str, Any]], None],
) -> LoadStats:
    """Send requests for ``seconds`` over ``connections``; let the ones in flight finish."""
    loop = asyncio.get_running_loop()
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    requests = [head.replace("{length}", str(len(b))).encode() + b for b in bodies]
    stats = LoadStats(connections=connections, rate=rate)
    histogram = _Histogram()
    started = loop.time()
    deadline = started + seconds
    slot = [started]
    interval = 1.0 / rate if rate else 0.0
    counter = [0]

    async def connect() -> _Connection:
        _, protocol = await loop.create_connection(_Connection, "127.0.0.1", port)
        return protocol

    def count_error(kind: str) -> None:
        stats.errors[kind] = stats.errors.get(kind, 0) + 1

    async def worker() -> None:
        conn: _Connection | None = None
        while True:
            if interval:
                when = slot[0] = max(slot[0], loop.time() - 1.0) + interval
                if when >= deadline:
                    break
                if when > loop.time():
                    await asyncio.sleep(when - loop.time())
            elif loop.time() >= deadline:
                break
            if conn is None or conn.closed:
                try:
                    conn = await connect()
                except OSError as exc:
                    count_error(f"connect: {type(exc).__name__}")
                    await asyncio.sleep(0.1)
                    continue
            data = requests[counter[0] % len(requests)]
            counter[0] += 1
            stats.sent += 1
            begun = time.perf_counter()
            try:
                status = await asyncio.wait_for(conn.request(data), timeout)
            except TimeoutError:
                count_error("timeout")
                if conn.transport is not None:
                    conn.transport.abort()
                conn = None
                continue
            except OSError as exc:
                count_error(f"connection: {type(exc).__name__}")
                conn = None
                continue
            histogram.add(time.perf_counter() - begun)
            stats.answered += 1
            key = str(status)
            stats.by_status[key] = stats.by_status.get(key, 0) + 1
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            progress(
                {
                    "t": round(loop.time() - started, 3),
                    "sent": stats.sent,
                    "answered": stats.answered,
                    "errors": stats.error_count,
                }
            )

    reporter = asyncio.ensure_future(report())
    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    finally:
        reporter.cancel()
    stats.seconds = round(loop.time() - started, 3)
    stats.p50_ms = _round(histogram.percentile(0.50))
    stats.p90_ms = _round(histogram.percentile(0.90))
    stats.p99_ms = _round(histogram.percentile(0.99))
    stats.max_ms = _round(histogram.max_s * 1000.0 if histogram.total else None)
    return stats


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _load_main(argv: list[str]) -> int:
    """``python -m tests.reliability._soak load``: JSON lines of progress, then the totals."""
    parser = argparse.ArgumentParser(prog="python -m tests.reliability._soak load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--bodies", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    bodies = make_bodies(args.bodies, args.batch)

    def progress(line: dict[str, Any]) -> None:
        print("PROGRESS " + json.dumps(line), flush=True)

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    stats = runner(
        _drive(args.port, bodies, args.seconds, args.connections, args.rate, args.timeout, progress)
    )
    print("RESULT " + json.dumps(asdict(stats)), flush=True)
    return 0


def wrk_script(path: Path, bodies: list[bytes], connections: int, rate: float | None) -> None:
    """A wrk Lua script that posts ``bodies`` in turn.

    With ``rate`` each connection waits ``connections / rate`` seconds before its next request,
    on top of the answer's latency, so the rate reached is somewhat below ``rate``.
    """
    # wrk has no rate option: each connection waits this long before its next request.
    write_lua(path, bodies, round(1000.0 * connections / rate, 3) if rate else 0, ROUTE)


def parse_wrk(stdout: str, connections: int, rate: float | None) -> LoadStats:
    """wrk's totals from the line the Lua ``done`` hook prints."""
    line = next((x for x in stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no totals:\n{stdout}")
    data = json.loads(line[len("WRK_JSON ") :])
    names = {"connect": "connect_errors", "read": "read_errors", "write": "write_errors"}
    names["timeout"] = "timeouts"
    errors = {name: int(data[key]) for name, key in names.items() if data[key]}
    answered = int(data["requests"])
    by_status = {"2xx": answered - int(data["status_errors"])}
    if data["status_errors"]:
        by_status["non-2xx"] = int(data["status_errors"])
    return LoadStats(
        sent=answered,
        answered=answered,
        by_status=by_status,
        errors=errors,
        seconds=round(data["duration_us"] / 1e6, 3),
        p50_ms=round(data["p50_us"] / 1000, 3),
        p90_ms=round(data["p90_us"] / 1000, 3),
        p99_ms=round(data["p99_us"] / 1000, 3),
        max_ms=round(data["max_us"] / 1000, 3),
        connections=connections,
        rate=rate,
        tool="wrk",
    )


# --------------------------------------------------------------------------- processes


def _http_json(url: str, timeout: float = 10.0) -> Any:
    import httpx

    response = httpx.get(url, timeout=timeout, trust_env=False)
    response.raise_for_status()
    return response.json()


def _wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before answering")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def model_server(workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The model app under uvicorn (uvloop, httptools, no access log) on 127.0.0.1."""
    port = free_port()
    log = open(workdir / "model.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.reliability._soak:create_model_app",
         "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", process, "the model server")
        yield process, port
    finally:
        _stop(process)
        log.close()


def build_baseline(workdir: Path, rows: int) -> Path:
    """Reference data written and summarized with ``inferwatch baseline build``."""
    data, out = workdir / "reference.jsonl", workdir / "baseline.json"
    write_reference(data, rows)
    subprocess.run(
        [sys.executable, "-m", "inferwatch", "baseline", "build", str(data), "--out", str(out),
         "--prediction-column", "prediction"],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


@dataclass
class SidecarProcess:
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    db: Path
    log: Path
    command: list[str]

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


@contextlib.contextmanager
def sidecar(
    upstream_port: int, workdir: Path, baseline: Path, flags: list[str]
) -> Iterator[SidecarProcess]:
    """``inferwatch sidecar`` in front of the model server; SIGTERM when the block ends."""
    port, admin_port = free_port(), free_port()
    db, log = workdir / "soak.duckdb", workdir / "sidecar.log"
    command = [
        sys.executable, "-m", "inferwatch", "sidecar",
        "--upstream", f"http://127.0.0.1:{upstream_port}",
        "--host", "127.0.0.1", "--port", str(port),
        "--admin-host", "127.0.0.1", "--admin-port", str(admin_port),
        "--db", str(db), "--baseline", str(baseline), "--upstream-health-path", "/health",
        *flags,
    ]  # fmt: skip
    handle = open(log, "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    running = SidecarProcess(process, port, admin_port, db, log, command)
    try:
        _wait_http(running.admin + "/readyz", process, "the sidecar")
        yield running
    finally:
        _stop(process, 60)
        handle.close()


# --------------------------------------------------------------------------- the soak


@dataclass
class SoakConfig:
    """What one soak run does."""

    duration_s: float = 120.0
    rate: float | None = None  # None: closed loop, as fast as the connections are answered
    connections: int = 32
    load: str = "python"  # or "wrk"
    batch: int = 4  # records per request
    bodies: int = 1024  # distinct request bodies
    sample_rate: float = 1.0
    check_interval: str = "10s"
    window: str = "1h"
    sample_every_s: float = 5.0
    warmup_s: float = 120.0  # RSS growth is measured from here to the end
    reference_rows: int = 20_000
    extra_flags: list[str] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path("soak-run"))


@dataclass
class Sample:
    """One look at the running sidecar."""

    t: float
    rss_mib: float
    duckdb_mib: float  # DuckDB's own part of the RSS (buffers and caches, up to db_memory)
    cpu_s: float
    threads: int
    sampled: int
    stored: int
    dropped: int
    write_errors: int
    queue_depth: int
    db_mib: float
    checks: int
    load_sent: int
    load_answered: int
    upstream_served: int
    health_per_second: float | None
    health_p99_ms: float | None


def _sidecar_sample(running: SidecarProcess, t: float, load: dict[str, int], model: int) -> Sample:
    import httpx
    import psutil

    proc = psutil.Process(running.process.pid)
    with proc.oneshot():
        rss = proc.memory_info().rss
        times = proc.cpu_times()
        threads = proc.num_threads()
    health = _http_json(running.admin + "/health?window=10s")
    capture = health["capture"]
    metrics = httpx.get(running.admin + "/metrics", timeout=10, trust_env=False).text
    match = _CHECKS_METRIC.search(metrics)
    served = _http_json(f"http://127.0.0.1:{model}/_count")["served"]
    return Sample(
        t=round(t, 2),
        rss_mib=round(rss / 2**20, 1),
        duckdb_mib=round((capture.get("db_memory_bytes") or 0) / 2**20, 1),
        cpu_s=round(times.user + times.system, 2),
        threads=threads,
        sampled=capture["sampled"],
        stored=capture["stored"],
        dropped=capture["dropped"],
        write_errors=capture["write_errors"],
        queue_depth=capture["queue_depth"],
        db_mib=round((capture.get("db_bytes") or 0) / 2**20, 1),
        checks=int(float(match.group(1))) if match else -1,
        load_sent=load.get("sent", -1),
        load_answered=load.get("answered", -1),
        upstream_served=served,
        health_per_second=health["requests"]["per_second"],
        health_p99_ms=health["latency_ms"]["p99"],
    )


def _start_load(
    config: SoakConfig, port: int, bodies: list[bytes]
) -> tuple[subprocess.Popen[str], dict[str, Any], threading.Thread]:
    """Start the load generator; a thread keeps its latest progress and final line."""
    seen: dict[str, Any] = {"progress": {}, "result": None, "output": []}
    if config.load == "wrk":
        script = config.workdir / "soak.lua"
        wrk_script(script, bodies, config.connections, config.rate)
        command = ["wrk", "-t1", f"-c{config.connections}",
                   f"-d{max(1, round(config.duration_s))}s", "--timeout", "30s", "--latency",
                   "-s", str(script), f"http://127.0.0.1:{port}{ROUTE}"]  # fmt: skip
    else:
        command = [sys.executable, "-m", "tests.reliability._soak", "load", "--port", str(port),
                   "--seconds", str(config.duration_s), "--connections", str(config.connections),
                   "--batch", str(config.batch), "--bodies", str(config.bodies)]  # fmt: skip
        if config.rate:
            command += ["--rate", str(config.rate)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("PROGRESS "):
                seen["progress"] = json.loads(line[len("PROGRESS ") :])
            elif line.startswith("RESULT "):
                seen["result"] = LoadStats(**json.loads(line[len("RESULT ") :]))
            else:
                seen["output"].append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen["command"] = command
    return process, seen, reader


def _fit(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than three points."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def memory_summary(samples: list[Sample], warmup_s: float) -> dict[str, Any]:
    """RSS after start, at the end of warm-up and at the end; growth and slope after warm-up."""
    if not samples:
        return {}
    after = [s for s in samples if s.t >= warmup_s] or samples[-1:]
    end = samples[-1]
    start = after[0]
    half = samples[len(samples) // 2 :]
    slope_half = _fit([(s.t / 60.0, s.rss_mib) for s in half])
    slope_after = _fit([(s.t / 60.0, s.rss_mib) for s in after])
    return {
        "rss_first_mib": samples[0].rss_mib,
        "rss_at_warmup_mib": start.rss_mib,
        "warmup_t_s": start.t,
        "rss_end_mib": end.rss_mib,
        "rss_max_mib": max(s.rss_mib for s in samples),
        "growth_after_warmup_mib": round(end.rss_mib - start.rss_mib, 1),
        "growth_after_warmup_pct": round(100.0 * (end.rss_mib / start.rss_mib - 1.0), 2),
        "max_after_warmup_mib": max(s.rss_mib for s in after),
        "slope_second_half_mib_per_min": None if slope_half is None else round(slope_half, 3),
        "slope_after_warmup_mib_per_min": None if slope_after is None else round(slope_after, 3),
        # DuckDB's buffer pool fills towards db_memory as the store grows: bounded, not a leak.
        "duckdb_at_warmup_mib": start.duckdb_mib,
        "duckdb_end_mib": end.duckdb_mib,
        "duckdb_max_mib": max(s.duckdb_mib for s in samples),
        "outside_duckdb_at_warmup_mib": round(start.rss_mib - start.duckdb_mib, 1),
        "outside_duckdb_end_mib": round(end.rss_mib - end.duckdb_mib, 1),
        "outside_duckdb_growth_pct": round(
            100.0 * ((end.rss_mib - end.duckdb_mib) / (start.rss_mib - start.duckdb_mib) - 1.0), 2
        ),
    }


def _store_counts(db: Path, batch: int) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:

        def one(sql: str) -> Any:
            row = con.execute(sql).fetchone()
            return row[0] if row else None

        reports = con.execute("SELECT ts, status FROM drift_reports ORDER BY ts").fetchall()
        gaps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(reports)]
        statuses: dict[str, int] = {}
        for _, status in reports:
            statuses[status] = statuses.get(status, 0) + 1
        ticks = sorted(
            row[0]
            for row in con.execute(
                "SELECT interval_s FROM efficiency WHERE route = '*' AND interval_s IS NOT NULL"
            ).fetchall()
        )
        alerts = dict(
            con.execute(
                "SELECT rule || ' ' || state, count(*) FROM alerts GROUP BY ALL ORDER BY 1"
            ).fetchall()
        )
        return {
            "requests": one("SELECT count(*) FROM requests"),
            "requests_2xx": one("SELECT count(*) FROM requests WHERE status BETWEEN 200 AND 299"),
            "requests_not_whole": one(
                "SELECT count(*) FROM requests WHERE input_status IS DISTINCT FROM 'ok' "
                f"OR output_status IS DISTINCT FROM 'ok' OR input_rows <> {batch} "
                f"OR output_rows <> {batch}"
            ),
            "distinct_request_ids": one("SELECT count(DISTINCT request_id) FROM requests"),
            "features": one("SELECT count(*) FROM features"),
            "drift_reports": len(reports),
            "report_statuses": statuses,
            "report_gap_s": {
                "median": round(sorted(gaps)[len(gaps) // 2], 2) if gaps else None,
                "max": round(max(gaps), 2) if gaps else None,
            },
            # Resource ticks run on their own thread, beside the checks'.
            "tick_interval_s": {
                "median": round(ticks[len(ticks) // 2], 2) if ticks else None,
                "max": round(ticks[-1], 2) if ticks else None,
            },
            "alerts": alerts,
        }
    finally:
        con.close()


def _sidecar_log_facts(log: Path) -> dict[str, Any]:
    text = log.read_text(errors="replace")
    return {
        "job_failures": len(re.findall(r"inferwatch job \S+ failed", text)),
        "job_overruns": len(re.findall(r"inferwatch job \S+ took", text)),
        "warnings": sum(1 for line in text.splitlines() if "WARNING" in line or "ERROR" in line),
        "tail": text.splitlines()[-15:],
    }


def run_soak(config: SoakConfig, say: Callable[[str], None] = lambda _line: None) -> dict[str, Any]:
    """One soak run; returns everything measured (JSON-ready)."""
    import httpx

    config.workdir.mkdir(parents=True, exist_ok=True)
    say(f"building a baseline from {config.reference_rows} reference rows")
    baseline = build_baseline(config.workdir, config.reference_rows)
    bodies = make_bodies(config.bodies, config.batch)
    flags = [
        "--sample-rate", str(config.sample_rate), "--check-interval", config.check_interval,
        "--window", config.window, *config.extra_flags,
    ]  # fmt: skip
    result: dict[str, Any] = {"config": {**asdict(config), "workdir": str(config.workdir)}}
    samples: list[Sample] = []
    with (
        model_server(config.workdir) as (_, model_port),
        sidecar(model_port, config.workdir, baseline, flags) as running,
    ):
        result["sidecar_command"] = " ".join(running.command)
        say(f"sidecar pid {running.process.pid} on :{running.port}, admin :{running.admin_port}")
        began = time.monotonic()
        load, seen, reader = _start_load(config, running.port, bodies)
        say(f"load: {' '.join(seen['command'][:4])}... for {config.duration_s:.0f} s")
        next_sample = began
        try:
            while load.poll() is None:
                if time.monotonic() >= next_sample:
                    next_sample += config.sample_every_s
                    sample = _sidecar_sample(
                        running, time.monotonic() - began, seen["progress"], model_port
                    )
                    samples.append(sample)
                    say(
                        f"t={sample.t:7.1f}s rss={sample.rss_mib:7.1f} MiB "
                        f"sampled={sample.sampled} stored={sample.stored} "
                        f"dropped={sample.dropped} queue={sample.queue_depth} "
                        f"checks={sample.checks} db={sample.db_mib} MiB"
                    )
                time.sleep(0.2)
        finally:
            if load.poll() is None:
                load.terminate()
            load.wait(60)
            reader.join(10)
        load_seconds = time.monotonic() - began
        if config.load == "wrk":
            stats = parse_wrk("".join(seen["output"]), config.connections, config.rate)
        else:
            stats = seen["result"]
            if stats is None:
                raise RuntimeError(
                    "the load generator printed no totals:\n" + "".join(seen["output"])
                )
        # The writer catches up: everything sampled is stored, dropped or a write error.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            capture = _http_json(running.admin + "/health?window=10s")["capture"]
            done = capture["stored"] + capture["dropped"] + capture["write_errors"]
            if capture["queue_depth"] == 0 and done >= capture["sampled"]:
                break
            time.sleep(0.2)
        final = _sidecar_sample(running, time.monotonic() - began, seen["progress"], model_port)
        samples.append(final)
        health = _http_json(running.admin + "/health")
        metrics = httpx.get(running.admin + "/metrics", timeout=10, trust_env=False).text
        result["metrics_capture"] = {
            name: int(float(value)) for name, value in _CAPTURE_METRIC.findall(metrics)
        }
        upstream_served = final.upstream_served
        drift = httpx.get(running.admin + "/drift", timeout=30, trust_env=False).json()
        stopped = time.monotonic()
        exit_code = _stop(running.process, 60)
        result["stop_s"] = round(time.monotonic() - stopped, 2)
        result["exit_code"] = exit_code
    result["load"] = {**asdict(stats), "per_second": round(stats.per_second, 1)}
    result["load_wall_s"] = round(load_seconds, 2)
    result["upstream_served"] = upstream_served
    result["capture"] = health["capture"]
    result["health_status"] = health["status"]
    result["upstream"] = health.get("upstream")
    result["latest_drift"] = {
        "status": drift.get("status"),
        "window_rows": (drift.get("window") or {}).get("rows"),
        "drifted_features": drift.get("drifted_features"),
        "schema_anomalies": drift.get("schema_anomalies"),
    }
    result["store"] = _store_counts(running.db, config.batch)
    result["store"]["file_mib"] = round(
        sum(p.stat().st_size for p in config.workdir.glob("soak.duckdb*")) / 2**20, 1
    )
    result["checks_run"] = final.checks
    result["memory"] = memory_summary(samples, config.warmup_s)
    result["sidecar_cpu_s"] = final.cpu_s
    result["sidecar_log"] = _sidecar_log_facts(running.log)
    result["samples"] = [asdict(s) for s in samples]
    result["verdicts"] = verdicts(result)
    return result


def verdicts(result: dict[str, Any], rss_growth_pct: float = 5.0) -> dict[str, dict[str, Any]]:
    """Each property the soak must show, with the figures it rests on and whether it held."""
    load, capture, store = result["load"], result["capture"], result["store"]
    config = result["config"]
    per_request = config["batch"] * (FEATURES + 1)
    out: dict[str, dict[str, Any]] = {}

    def check(name: str, ok: bool, detail: str) -> None:
        out[name] = {"ok": bool(ok), "detail": detail}

    non_2xx = sum(n for s, n in load["by_status"].items() if not s.startswith("2"))
    errors = sum(load["errors"].values())
    check(
        "every request answered",
        errors == 0 and non_2xx == 0 and load["answered"] == load["sent"],
        f"sent {load['sent']}, answered {load['answered']}, non-2xx {non_2xx}, "
        f"socket errors {errors} {load['errors'] or ''}".rstrip(),
    )
    # wrk does not count the requests it cuts at the end: allow one per connection there.
    slack = load["connections"] if load["tool"] == "wrk" else 0
    check(
        "every request reached the model once",
        load["sent"] <= result["upstream_served"] <= load["sent"] + slack,
        f"client {load['sent']}, model served {result['upstream_served']}",
    )
    check(
        "every request was sampled (sample_rate 1.0)",
        config["sample_rate"] < 1.0 or load["sent"] <= capture["sampled"] <= load["sent"] + slack,
        f"client {load['sent']}, sampled {capture['sampled']}",
    )
    accounted = capture["stored"] + capture["dropped"] + capture["write_errors"]
    check(
        "stored + dropped + write errors = sampled",
        accounted == capture["sampled"] and capture["queue_depth"] == 0,
        f"sampled {capture['sampled']}, stored {capture['stored']}, dropped "
        f"{capture['dropped']}, write errors {capture['write_errors']}, "
        f"queue {capture['queue_depth']}",
    )
    removed = capture.get("rows_expired", 0) + capture.get("rows_evicted", 0)
    check(
        "stored rows in DuckDB = sampled - dropped",
        store["requests"] == capture["sampled"] - capture["dropped"]
        and capture["write_errors"] == 0
        and removed == 0,
        f"requests table {store['requests']}, sampled - dropped "
        f"{capture['sampled'] - capture['dropped']}, write errors {capture['write_errors']}, "
        f"rows expired or evicted {removed}",
    )
    check(
        "every stored request whole",
        store["requests_not_whole"] == 0
        and store["distinct_request_ids"] == store["requests"]
        and store["features"] == store["requests"] * per_request
        and capture.get("rows_stored") == store["features"],
        f"{store['requests_not_whole']} not whole, {store['distinct_request_ids']} distinct ids, "
        f"features {store['features']} (expected {store['requests'] * per_request}, "
        f"counted {capture.get('rows_stored')})",
    )
    exported = result.get("metrics_capture", {})
    check(
        "drops counted",
        capture["dropped"] == capture["sampled"] - capture["stored"] - capture["write_errors"]
        and exported.get("dropped") == capture["dropped"]
        and exported.get("sampled") == capture["sampled"],
        f"dropped {capture['dropped']} on /health, {exported.get('dropped')} on /metrics "
        f"(sampled {exported.get('sampled')}); health status {result.get('health_status')}",
    )
    interval = _seconds(config["check_interval"])
    expected = int(result["load_wall_s"] // interval) - 2
    check(
        f"checks ran about every {config['check_interval']}",
        store["drift_reports"] >= expected and result["sidecar_log"]["job_failures"] == 0,
        f"{store['drift_reports']} reports stored ({result['checks_run']} counted) in "
        f"{result['load_wall_s']:.0f} s, at least {expected} expected; gaps "
        f"{store['report_gap_s']}; job failures {result['sidecar_log']['job_failures']}",
    )
    memory = result["memory"]
    limit_mib = config.get("db_memory_mib", 256)
    check(
        f"memory flat after warm-up (RSS outside DuckDB < {rss_growth_pct:g} % growth, "
        f"DuckDB under db_memory)",
        memory["outside_duckdb_growth_pct"] < rss_growth_pct
        and memory["duckdb_max_mib"] <= limit_mib,
        f"RSS {memory['rss_at_warmup_mib']} MiB at {memory['warmup_t_s']:.0f} s, "
        f"{memory['rss_end_mib']} MiB at the end ({memory['growth_after_warmup_pct']:+.1f} %), "
        f"max {memory['rss_max_mib']} MiB, slope over the second half "
        f"{memory['slope_second_half_mib_per_min']} MiB/min; of which DuckDB "
        f"{memory['duckdb_at_warmup_mib']} -> {memory['duckdb_end_mib']} MiB (limit {limit_mib}); "
        f"outside DuckDB {memory['outside_duckdb_at_warmup_mib']} -> "
        f"{memory['outside_duckdb_end_mib']} MiB ({memory['outside_duckdb_growth_pct']:+.1f} %)",
    )
    check(
        "clean shutdown",
        result["exit_code"] == 0,
        f"exit {result['exit_code']} after {result['stop_s']} s",
    )
    return out


def _seconds(text: str) -> float:
    from inferwatch.middleware.settings import parse_duration

    return parse_duration(text)


def summary_text(result: dict[str, Any]) -> str:
    """A few lines a person reads: the rate, latency, memory, counts and each verdict."""
    load, capture, store, memory = (
        result["load"], result["capture"], result["store"], result["memory"]
    )  # fmt: skip
    pacing = "closed loop" if not load["rate"] else f"paced at {load['rate']:g}/s"
    lines = [
        f"load ({load['tool']}, {load['connections']} connections, {pacing}): "
        f"{load['answered']} answered in {load['seconds']:.0f} s = {load['per_second']:.0f} req/s, "
        f"p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, max {load['max_ms']} ms",
        f"capture: sampled {capture['sampled']}, stored {capture['stored']}, dropped "
        f"{capture['dropped']}, write errors {capture['write_errors']}; DuckDB requests "
        f"{store['requests']}, features {store['features']}, file {store['file_mib']} MiB",
        f"memory: RSS {memory['rss_first_mib']} MiB first, {memory['rss_at_warmup_mib']} MiB at "
        f"{memory['warmup_t_s']:.0f} s, {memory['rss_end_mib']} MiB at the end, max "
        f"{memory['rss_max_mib']} MiB; slope second half "
        f"{memory['slope_second_half_mib_per_min']} MiB/min",
        f"checks: {store['drift_reports']} reports {store['report_statuses']}, gaps "
        f"{store['report_gap_s']}; resource ticks every {store['tick_interval_s']} s; alerts "
        f"{store['alerts'] or 'none'}; sidecar CPU {result['sidecar_cpu_s']} s, "
        f"stop {result['stop_s']} s",
    ]
    for name, verdict in result["verdicts"].items():
        lines.append(f"[{'ok' if verdict['ok'] else 'FAIL'}] {name}: {verdict['detail']}")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        sys.exit(_load_main(sys.argv[2:]))
    sys.exit("usage: python -m tests.reliability._soak load --port P --seconds S [...]")
