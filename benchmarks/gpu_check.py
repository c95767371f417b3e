"""Check inferwatch's GPU figures against nvidia-smi on a machine with an NVIDIA GPU.

One process runs a monitored Starlette app under uvicorn and a torch matmul loop that keeps the
GPU busy; the script reads /monitor/health and, at the same moment, ``nvidia-smi --query-gpu`` and
``--query-compute-apps``, and prints them side by side (Markdown, also written to ``--out``).

On the lent GPU machine (see docs/benchmarks.md for the wheels it needs)::

    python3 benchmarks/gpu_check.py --seconds 20 --out $OUT/gpu_check.md
    python3 benchmarks/gpu_check.py --quick          # smoke run: 5 s of load
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.servers import free_port

from inferwatch import MonitorMiddleware

GPU_FIELDS = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"


def load_gpu(stop: threading.Event, size: int) -> None:
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    while not stop.is_set():
        for _ in range(20):
            a = (a @ b).clamp_(-1, 1)
        torch.cuda.synchronize()


def nvidia_smi() -> tuple[list[list[str]], list[list[str]]]:
    gpus = subprocess.run(
        ["nvidia-smi", f"--query-gpu={GPU_FIELDS}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    apps = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return _csv(gpus), _csv(apps)


def _csv(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split(",")] for line in text.splitlines() if line]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load before reading")
    parser.add_argument("--size", type=int, default=8192, help="matrix size of the load")
    parser.add_argument("--out", default=None, help="also write the report here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s of load")
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
    port = free_port()

    async def predict(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"predictions": [1]})

    db = os.path.join(tempfile.mkdtemp(), "gpu.duckdb")
    app = MonitorMiddleware(
        Starlette(routes=[Route("/predict", predict, methods=["POST"])]),
        db=db, resource_interval=1.0,
    )  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    stop = threading.Event()
    threading.Thread(target=load_gpu, args=(stop, args.size), daemon=True).start()
    deadline = time.monotonic() + args.seconds
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                client.post("/predict", json={"a": 1})
            time.sleep(0.2)
        # Read both sides back to back so they describe the same moment.
        smi_before = nvidia_smi()
        health = client.get("/monitor/health").json()
        smi_after = nvidia_smi()
    stop.set()
    server.should_exit = True

    lines = [f"# GPU figures: inferwatch /health beside nvidia-smi (pid {os.getpid()})", ""]
    resources = health["resources"]
    lines.append(f"gpu_error: {resources.get('gpu_error')}")
    lines += ["", "| field | inferwatch | nvidia-smi before | nvidia-smi after |",
              "| --- | --- | --- | --- |"]  # fmt: skip
    names = ["index", "name", "utilization_percent", "memory_used_bytes", "memory_total_bytes",
             "temperature_c", "power_watts"]  # fmt: skip
    for gpu, before, after in zip(resources["gpus"], smi_before[0], smi_after[0], strict=False):
        for key, smi_b, smi_a in zip(names, before, after, strict=True):
            value = gpu.get(key)
            if key.endswith("_bytes") and value is not None:
                value = f"{value / 2**20:.0f} MiB"
                smi_b, smi_a = f"{smi_b} MiB", f"{smi_a} MiB"
            lines.append(f"| {key} | {value} | {smi_b} | {smi_a} |")
        process_mem = gpu.get("process_memory_bytes")
        shown = "None" if process_mem is None else f"{process_mem / 2**20:.0f} MiB"
        lines.append(f"| process_memory_bytes | {shown} | {smi_before[1]} | {smi_after[1]} |")
        lines.append(
            f"| process_utilization_percent | {gpu.get('process_utilization_percent')} | | |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0 if resources["gpus"] else 1


if __name__ == "__main__":
    sys.exit(main())
