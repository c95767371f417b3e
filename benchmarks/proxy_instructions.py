"""Instructions the sidecar's proxy process runs per proxied request, counted by callgrind.

The proxy's CPU time per request moves by several µs from run to run on a shared virtual machine;
its instruction count does not. So this script puts each proxy under ``valgrind --tool=callgrind``
in front of a stub model server (a separate process: one JSON answer, its head and body written
apart as uvicorn writes them) and sends it sequential keep-alive POSTs of 4 records of 10
features: after a warm-up, the counters are zeroed (``callgrind_control -z``), ``--requests``
requests go through, and the counters are dumped. Every thread of the proxy's process counts
(the hand-off's sender thread too); the collector that the sidecar starts runs outside valgrind.
The variants: ``inferwatch sidecar`` at each ``--rates`` sample rate, and ``floor``
(``_lib/floor_proxy.py``), the least a proxy in Python does per request.

    python benchmarks/proxy_instructions.py                   # about 3 minutes
    python benchmarks/proxy_instructions.py --quick           # 300 requests, sample_rate 0.1

Needs valgrind (Debian: ``apt-get install -y valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib.callgrind import total_instructions
from _lib.servers import free_port, start, stop, wait_for_http

REPO = Path(__file__).resolve().parent.parent
FLOOR = Path(__file__).resolve().parent / "_lib" / "floor_proxy.py"
_WARMUP = 300
_ANSWER = b'{"predictions": [0.1, 0.2, 0.3, 0.4]}'
_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(
    _ANSWER
)


def stub(port: int) -> None:
    """The model server: answers every request at once, its head and body in two writes."""
    import httptools

    class Stub(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(_HEAD)
            self.transport.write(_ANSWER)

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Stub, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(serve())


def post(port: int, count: int) -> None:
    """``count`` sequential POSTs over one kept connection, each answer read whole."""
    body = json.dumps({"instances": [{f"f{i}": i * 1.5 for i in range(10)}] * 4}).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nhost: model\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    length = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            sock.sendall(request)
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("the proxy closed the connection")
                data += chunk
                head, found, rest = data.partition(b"\r\n\r\n")
                size = length.search(head) if found else None
                if size is not None and len(rest) >= int(size.group(1)):
                    break


def count(variant: str, requests: int, upstream: int, workdir: Path) -> float:
    """Instructions per request of one proxy under callgrind."""
    port, admin = free_port(), free_port()
    out = workdir / f"{variant}.callgrind"
    url = f"http://127.0.0.1:{upstream}"
    if variant == "floor":
        command = [sys.executable, str(FLOOR), str(port), url]
    else:
        command = [
            sys.executable, "-m", "inferwatch", "sidecar", "--upstream", url,
            "--host", "127.0.0.1", "--port", str(port), "--admin-host", "127.0.0.1",
            "--admin-port", str(admin), "--db", str(workdir / f"{variant}.duckdb"),
            "--sample-rate", variant.split("-", 1)[1], "--upstream-health-path", "/",
        ]  # fmt: skip
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    proxy = start([*valgrind, *command], workdir / f"{variant}.log", cwd=REPO)
    try:
        wait_for_http(port, "/", proxy, timeout=300)
        post(port, _WARMUP)
        subprocess.run(["callgrind_control", "-z", str(proxy.pid)], capture_output=True, check=True)
        post(port, requests)
        subprocess.run(["callgrind_control", "-d", str(proxy.pid)], capture_output=True, check=True)
    finally:
        stop(proxy, timeout=120)
    dumps = sorted(workdir.glob(f"{variant}.callgrind.*"))
    total = total_instructions(dumps[0])
    if total is None:
        raise SystemExit(f"callgrind gave no total for {variant}")
    return total / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests counted per variant")
    parser.add_argument("--rates", default="0.0,0.1,1.0", help="the sidecar's sample rates")
    parser.add_argument("--quick", action="store_true", help="300 requests, sample_rate 0.1")
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stub:
        stub(args.stub)
        return 0
    if args.quick:
        args.requests, args.rates = 300, "0.1"
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install -y valgrind)")
    variants = [f"sidecar-{rate.strip()}" for rate in args.rates.split(",")] + ["floor"]
    upstream = free_port()
    with tempfile.TemporaryDirectory(prefix="inferwatch-proxy-instructions-") as tmp:
        workdir = Path(tmp)
        model = start([sys.executable, __file__, "--stub", str(upstream)], workdir / "stub.log")
        try:
            wait_for_http(upstream, "/", model)
            figures = {v: count(v, args.requests, upstream, workdir) for v in variants}
        finally:
            stop(model)
    floor = figures["floor"]
    print(f"{args.requests:,} sequential POSTs per variant, after {_WARMUP} more")
    print()
    print("| variant | instructions per request | vs floor |")
    print("| --- | --- | --- |")
    for variant, figure in figures.items():
        print(f"| {variant} | {figure:,.0f} | {figure / floor:.2f}x |")
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    print(f"\n{time.monotonic() - started:.0f} s", file=sys.stderr)
    raise SystemExit(status)
