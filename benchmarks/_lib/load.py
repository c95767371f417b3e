"""Load from wrk: a Lua script posting pre-built bodies in turn, and one run pinned to cores,
read back as JSON."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WRK_LUA = """\
-- Posts one of a few pre-built JSON bodies per request; prints wrk's summary as JSON.
wrk.method = "POST"
%(path)swrk.headers["Content-Type"] = "application/json"
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


def write_lua(
    path: Path, bodies: Sequence[bytes], pause_ms: float = 0, route: str | None = None
) -> None:
    """A wrk script posting ``bodies`` in turn, to ``route`` where given (else the URL's path);
    with ``pause_ms`` each connection waits that long after each response (a paced load)."""
    lines = [f"  [==[{body.decode()}]==]," for body in bodies]
    delay = f"delay = function() return {pause_ms:g} end" if pause_ms else ""
    path_line = f'wrk.path = "{route}"\n' if route else ""
    text = WRK_LUA % {"bodies": "\n".join(lines), "delay": delay, "path": path_line}
    path.write_text(text, encoding="utf-8")


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

    @property
    def failed(self) -> int:
        """Requests that did not get a 2xx answer: socket errors, timeouts, other statuses."""
        return self.errors + self.status_errors


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
