"""``inferwatch demo``: a model server, the sidecar in front of it, and a day of traffic.

Everything runs on 127.0.0.1 from a temporary folder: the demo model server and the sidecar are
child processes; this process plays the traffic, sends the late labels, runs a check at the end
of each phase and says what inferwatch found. The dashboard stays up until Ctrl-C, SIGTERM or
--duration; then the children stop and the folder is removed (``--keep`` keeps it).
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import httpx

from ._demo_model import MODEL_NAME, LogisticModel, load_dataset
from ._demo_traffic import PHASES, PhaseResult, play_phase

__all__ = ["run_demo"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"The {what} exited at start (status {process.returncode}).")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"The {what} did not become ready within 60 s.")


def _reference(folder: Path) -> tuple[Path, list[tuple[dict[str, Any], str]]]:
    """Write the baseline's reference data; return it and the pool of serving rows."""
    names, x, y = load_dataset()
    model = LogisticModel(names, x[::2], y[::2])
    rows = [dict(zip(names, map(float, values), strict=True)) for values in x[1::2]]
    predictions = model.predict(rows)
    path = folder / "reference.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "prediction", "diagnosis"])
        for row, predicted, truth in zip(rows, predictions, y[1::2], strict=True):
            writer.writerow([*row.values(), predicted, truth])
    return path, list(zip(rows, y[1::2], strict=True))


def _finding(phase: str, report: dict[str, Any], health: dict[str, Any]) -> str:
    if phase == "errors":
        requests = health["requests"]
        return f"health {health['status']}: {requests['error_rate']:.0%} of requests failed"
    anomalies = report.get("schema_anomalies", [])
    if phase == "schema" and anomalies:
        kinds = sorted({f"{a['type']} ({a['feature']})" for a in anomalies})
        return "schema skew: " + ", ".join(kinds[:5])
    if report.get("drift_detected"):
        drifted = report["drifted_features"]
        moved = [n for n, e in report.get("prediction", {}).items() if e.get("drifted")]
        extra = f"; prediction drift on {', '.join(moved)}" if moved else ""
        return f"drift on {len(drifted)} features: {', '.join(drifted[:5])}{extra}"
    return f"status {report['status']}, no drift or skew"


class _Stopped(Exception):
    """SIGTERM arrived: stop as on Ctrl-C."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped


def run_demo(
    duration: float | None, phase_seconds: float, rate: float, port: int, keep: bool = False
) -> int:
    """Run the demo; return the exit status.

    On Ctrl-C, SIGTERM or the end of ``duration`` it stops its model server and sidecar and
    removes its folder, unless ``keep``.
    """
    # Ctrl-C stops it even where it was started with SIGINT ignored (a shell's background job).
    previous = (
        signal.signal(signal.SIGTERM, _stop),
        signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    folder = Path(tempfile.mkdtemp(prefix="inferwatch-demo-"))
    children: list[subprocess.Popen[bytes]] = []
    try:
        return _run(folder, children, duration, phase_seconds, rate, port)
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        # A second Ctrl-C must not leave the children running: stopping them is bounded anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_children(children)
        if keep:
            click.echo(f"files kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _run(
    folder: Path,
    children: list[subprocess.Popen[bytes]],
    duration: float | None,
    phase_seconds: float,
    rate: float,
    port: int,
) -> int:
    if duration is not None:
        phase_seconds = max(4.0, (duration - 12.0) / len(PHASES))
    reference, pool = _reference(folder)
    from inferwatch.middleware.baseline.build import build_baseline

    baseline = folder / "baseline.json"
    build_baseline(
        str(reference), out=str(baseline), label_column="diagnosis", prediction_column="prediction"
    )
    model_port, admin_port = _free_port(), _free_port()
    span = phase_seconds * len(PHASES) + 30  # evaluation reaches back over the whole demo
    admin = f"http://127.0.0.1:{admin_port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (folder / "servers.log").open("ab") as log:
        model = subprocess.Popen(
            [sys.executable, "-m", "inferwatch.sidecar._demo_model", "--port", str(model_port)],
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
        children.append(model)
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "inferwatch", "sidecar",
             "--upstream", f"http://127.0.0.1:{model_port}", "--host", "127.0.0.1",
             "--port", str(port), "--admin-host", "127.0.0.1", "--admin-port", str(admin_port),
             "--db", str(folder / "demo.duckdb"), "--baseline", str(baseline),
             "--window", f"{phase_seconds:.1f}s", "--evaluation-window", f"{span:.0f}s",
             "--check-interval", "3s", "--min-rows", "40",
             "--resource-interval", "2s", "--upstream-health-path", "/v2/health/ready",
             "--alert-for", "1", "--alert-min-requests", "10"],
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
        children.append(sidecar)
    _wait_ready(f"http://127.0.0.1:{model_port}/v2/health/ready", model, "model server")
    _wait_ready(f"{admin}/readyz", sidecar, "sidecar")
    click.echo(f"inferwatch demo: model on :{model_port}, sidecar on :{port}, files in {folder}")
    click.echo(f"dashboard: {admin}/dashboard\n")
    summary = _play(port, admin, phase_seconds, rate, pool)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    click.echo(f"\nsummary: {folder / 'summary.json'}")
    click.echo(f"dashboard: {admin}/dashboard  (Ctrl-C to stop)")
    _linger(duration, summary["started"])
    return 0


def _play(
    port: int, admin: str, phase_seconds: float, rate: float, pool: list[tuple[dict[str, Any], str]]
) -> dict[str, Any]:
    rng = random.Random(7)
    started = time.monotonic()
    summary: dict[str, Any] = {"started": started, "phases": {}}
    results: list[PhaseResult] = []
    path = f"/v1/models/{MODEL_NAME}:predict"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for number, phase in enumerate(PHASES, 1):
            click.echo(f"[{number}/{len(PHASES)}] {phase.name:8} {phase.says} ...", nl=False)
            result = play_phase(
                client, phase, pool, seconds=phase_seconds, rate=rate, path=path, rng=rng
            )
            results.append(result)
            time.sleep(1.0)  # let the writer land the last batches (it flushes every 0.5 s)
            report = httpx.post(f"{admin}/drift/check", timeout=60).json()
            health = httpx.get(f"{admin}/health", params={"window": f"{phase_seconds}s"}).json()
            finding = _finding(phase.name, report, health)
            summary["phases"][phase.name] = {
                "requests": result.requests, "errors": result.errors, "finding": finding,
                "drift": report, "health": {"status": health["status"],
                                            "requests": health["requests"]},
            }  # fmt: skip
            click.echo(f" {result.requests} requests, {result.errors} errors -> {finding}")
    click.echo("late labels arrive for the normal and the concept phase ...", nl=False)
    labels = results[0].labels + results[-1].labels
    answer = httpx.post(f"{admin}/labels", json=labels, timeout=60).json()
    evaluation = httpx.get(f"{admin}/evaluation", timeout=60).json()
    summary["labels"] = answer
    summary["evaluation"] = evaluation
    click.echo(f" {answer.get('accepted')} accepted, {answer.get('matched')} matched")
    click.echo(_evaluation_line(evaluation))
    summary["alerts"] = httpx.get(f"{admin}/alerts").json()
    summary["health"] = httpx.get(f"{admin}/health").json()
    click.echo(_alerts_line(summary["alerts"]))
    return summary


def _evaluation_line(evaluation: dict[str, Any]) -> str:
    buckets = [b for b in evaluation.get("buckets", []) if b.get("labels")]
    accuracies = [f"{b['metrics'].get('accuracy', 0):.2f}" for b in buckets if b.get("metrics")]
    reasons = "; ".join(evaluation.get("reasons", [])) or "no degradation"
    return f"evaluation {evaluation.get('status')}: accuracy over time {accuracies} -> {reasons}"


def _alerts_line(alerts: dict[str, Any]) -> str:
    fired = sorted({event["rule"] for event in alerts.get("history", [])})
    return f"alerts fired: {', '.join(fired) or 'none'}"


def _linger(duration: float | None, started: float) -> None:
    while duration is None or time.monotonic() - started < duration:
        time.sleep(0.5)
