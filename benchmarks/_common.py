"""Helpers the benchmark scripts share: the machine's description, markdown tables, the model
records, and running servers and wrk pinned to cores, with CPU read from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

PACKAGES = (
    "inferwatch",
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "uvloop",
    "httptools",
    "duckdb",
    "orjson",
    "numpy",
    "prometheus-fastapi-instrumentator",
    "prometheus-client",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def wrk_version() -> str | None:
    path = shutil.which("wrk")
    if path is None:
        return None
    done = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def machine_info(extra: Iterable[str] = ()) -> dict[str, str]:
    """What the figures were measured on: cores, CPU, kernel, Python and package versions."""
    info = {
        "nproc": str(os.cpu_count()),
        "usable cores": str(len(os.sched_getaffinity(0))),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "load average (1/5/15 min) when the figures were printed": " / ".join(
            f"{v:.2f}" for v in os.getloadavg()
        ),
    }
    for name in (*PACKAGES, *extra):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    return info


def machine_markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in info.items())


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pin_to_core(core: int) -> bool:
    """Pin this process (and threads it starts later) to one core; False when it is not there."""
    if core not in os.sched_getaffinity(0) and core >= (os.cpu_count() or 1):
        return False
    try:
        os.sched_setaffinity(0, {core})
    except OSError:
        return False
    return True


# The benchmarks' model input: a churn model's 10 features, of the types real records carry.
COUNTRIES = ("DE", "FR", "US", "GB", "ES", "IT", "NL", "PL")


# The model app the middleware benchmarks serve: pydantic validation, 10 features, a sync model.


class Record(BaseModel):
    age: int
    income: float
    tenure_months: int
    balance: float
    num_products: int
    credit_score: int
    utilization: float
    is_active: bool
    country: str
    channel: str


class PredictRequest(BaseModel):
    instances: list[Record] = Field(min_length=1, max_length=1_000)


class PredictResponse(BaseModel):
    predictions: list[float]


_COUNTRY_BIAS = {c: (i - 4) * 0.05 for i, c in enumerate(COUNTRIES)}
_CHANNEL_BIAS = {"web": 0.0, "mobile": 0.1, "branch": -0.2, "partner": 0.15}


def churn_probability(r: dict[str, Any]) -> float:
    """A small logistic model over the 10 features of one record."""
    z = (
        -1.2
        + 0.015 * (r["age"] - 45)
        - 0.25 * math.log1p(max(r["income"], 0.0) / 10_000)
        - 0.004 * r["tenure_months"]
        + 0.00001 * r["balance"]
        - 0.3 * (r["num_products"] - 2)
        - 0.003 * (r["credit_score"] - 650)
        + 1.1 * r["utilization"]
        - 0.6 * r["is_active"]
        + _COUNTRY_BIAS.get(r["country"], 0.0)
        + _CHANNEL_BIAS.get(r["channel"], 0.0)
    )
    return round(1.0 / (1.0 + math.exp(-z)), 6)


CHANNELS = ("web", "mobile", "branch", "partner")


def make_record(rng: random.Random) -> dict[str, Any]:
    """One realistic 10-feature record: five ints, three floats, a bool and two categoricals."""
    return {
        "age": rng.randint(18, 90),
        "income": round(rng.lognormvariate(10.5, 0.6), 2),
        "tenure_months": rng.randint(0, 240),
        "balance": round(rng.uniform(-2_000, 60_000), 2),
        "num_products": rng.randint(1, 6),
        "credit_score": rng.randint(300, 850),
        "utilization": round(rng.random(), 4),
        "is_active": rng.random() < 0.7,
        "country": rng.choice(COUNTRIES),
        "channel": rng.choice(CHANNELS),
    }


def make_bodies(count: int, batch: int, seed: int = 7) -> list[bytes]:
    """``count`` distinct ``{"instances": [...]}`` request bodies of ``batch`` records each."""
    rng = random.Random(seed)
    return [
        json.dumps({"instances": [make_record(rng) for _ in range(batch)]}).encode()
        for _ in range(count)
    ]


def make_prediction_bodies(count: int, batch: int, seed: int = 11) -> list[bytes]:
    """``count`` distinct ``{"predictions": [...]}`` response bodies of ``batch`` scores each."""
    rng = random.Random(seed)
    return [
        json.dumps({"predictions": [round(rng.random(), 6) for _ in range(batch)]}).encode()
        for _ in range(count)
    ]


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan startup, yield, then its shutdown (as a server would)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    said: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        said.append(message)

    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, receive, send))
    while not said:
        await asyncio.sleep(0.001)
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await task


async def asgi_request(app: Any, method: str, path: str, body: bytes) -> int:
    """One HTTP request straight into ``app``, no network; returns the response status."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": b"", "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
        "headers": [
            (b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }  # fmt: skip
    await app(scope, receive, send)
    return status


# --------------------------------------------------------------------------- servers and load

_TICK = os.sysconf("SC_CLK_TCK")


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


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process, all its threads, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread of ``pid`` (user + system)."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def core_times(core: int) -> tuple[float, float]:
    """(busy, total) seconds of one core since boot, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(f"cpu{core} "):
                    values = [int(v) for v in line.split()[1:]]
                    idle = values[3] + (values[4] if len(values) > 4 else 0)
                    total = sum(values[:8])
                    return (total - idle) / _TICK, total / _TICK
    except OSError:
        pass
    return 0.0, 0.0


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of ``pid`` in MiB."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                key = line.split(":", 1)[0]
                if key in values:
                    values[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


def pin_threads(pid: int, cores: set[int]) -> None:
    """Move every thread of a running process to ``cores`` (as ``taskset -a -p`` does)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cores)


def interleaved(variants: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """Each round runs every variant; the order rotates so that no variant always goes first."""
    order = []
    for rnd in range(rounds):
        shift = rnd % len(variants)
        for variant in (*variants[shift:], *variants[:shift]):
            order.append((rnd + 1, variant))
    return order


WRK_LUA = """\
-- Posts one of a few pre-built JSON bodies per request; prints wrk's summary as JSON.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {
%(bodies)s
}
local n = #bodies
local i = 0
request = function()
  i = i %% n + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
%(delay)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %%.0f, "duration_us": %%.0f, "bytes": %%.0f, ' ..
    '"connect_errors": %%.0f, "read_errors": %%.0f, "write_errors": %%.0f, ' ..
    '"status_errors": %%.0f, "timeouts": %%.0f, "p50_us": %%.0f, "p90_us": %%.0f, ' ..
    '"p99_us": %%.0f, "max_us": %%.0f, "mean_us": %%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""


def write_lua(path: Path, bodies: Sequence[bytes], pause_ms: int = 0) -> None:
    """A wrk script posting ``bodies`` in turn; with ``pause_ms`` each connection waits after
    each response (a paced load)."""
    lines = [f"  [==[{body.decode()}]==]," for body in bodies]
    delay = f"delay = function() return {pause_ms} end" if pause_ms else ""
    path.write_text(WRK_LUA % {"bodies": "\n".join(lines), "delay": delay}, encoding="utf-8")


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    status_errors: int


def wrk(
    url: str, lua: Path, seconds: float, connections: int, cores: str, threads: int = 1
) -> WrkResult:
    """One wrk run pinned to ``cores`` (a taskset list such as ``1`` or ``0,1``)."""
    cmd = [
        "taskset", "-c", cores, "wrk", f"-t{threads}", f"-c{connections}",
        f"-d{max(1, round(seconds))}s", "--latency", "-s", str(lua), url,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data = json.loads(line[len("WRK_JSON ") :])
    duration = data["duration_us"] / 1e6
    errors = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=duration,
        rps=data["requests"] / duration if duration else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=int(errors),
        status_errors=int(data["status_errors"]),
    )


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


def server_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


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
