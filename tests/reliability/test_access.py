"""Access: the admin token, the admin port's address, and where the proxy may send requests.

Both forms run for real: the model app with MonitorMiddleware in uvicorn, and the sidecar in
front of the test model server. tests/sidecar/test_no_open_proxy.py covers absolute-form targets,
Host tricks, dot segments and CONNECT; the tricks here are the ones it does not try.
"""

from __future__ import annotations

import ast
import base64
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import psutil
import pytest

from tests.conftest import ROOT, uvicorn_process
from tests.reliability.conftest import ADMIN_TOKEN as TOKEN
from tests.sidecar.conftest import (
    Bystander,
    ModelServer,
    Sidecar,
    raw_request,
    sidecar_process,
    start_model_server,
)

LABELS = [{"request_id": "r1", "label": 1}]
GUARDED = [
    ("GET", "/drift"),
    ("GET", "/drift/history"),
    ("GET", "/alerts"),
    ("POST", "/drift/check"),
    ("POST", "/labels"),
    ("GET", "/dashboard"),
    ("GET", "/export/requests.parquet"),
    ("GET", "/export/features.parquet?since=2020-01-01T00:00:00"),
]
OPEN = ["/healthz", "/health", "/metrics", "/openapi.json"]
WRONG: dict[str, bytes | None] = {
    "missing": None,
    "empty": b"",
    "scheme only": b"Bearer",
    "scheme and space": b"Bearer ",
    "prefix of the token": b"Bearer " + TOKEN[:-1].encode(),
    "first character": b"Bearer " + TOKEN[:1].encode(),
    "token and more": b"Bearer " + TOKEN.encode() + b"0",
    "token without scheme": TOKEN.encode(),
    "two spaces": b"Bearer  " + TOKEN.encode(),
    "basic": b"Basic " + base64.b64encode(f"admin:{TOKEN}".encode()),
    "another token": b"Bearer " + b"x" * len(TOKEN),
    "latin-1 byte": b"Bearer " + TOKEN.encode()[:-1] + b"\xe9",
    "UTF-8 bytes": "Bearer s3cr3t-ädmin".encode(),
    "NUL inside": b"Bearer " + TOKEN.encode() + b"\x00",
}


@dataclass(frozen=True)
class Api:
    """Where one form serves the monitor API: a port on 127.0.0.1 and a path prefix."""

    port: int
    prefix: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def raw(
        self, method: str, path: str, authorization: bytes | None, accept: bytes = b"*/*"
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send the Authorization header byte for byte (httpx would refuse some of them)."""
        body = orjson.dumps(LABELS) if path == "/labels" else b""
        head = [
            f"{method} {self.prefix}{path} HTTP/1.1".encode(),
            b"Host: 127.0.0.1",
            b"Accept: " + accept,
            b"Content-Type: application/json",
            b"Content-Length: %d" % len(body),
            b"Connection: close",
        ]
        if authorization is not None:
            head.append(b"Authorization: " + authorization)
        answer = raw_request(self.port, b"\r\n".join(head) + b"\r\n\r\n" + body, timeout=30)
        top, _, content = answer.partition(b"\r\n\r\n")
        status_line, *lines = top.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers, content


@pytest.fixture(params=["middleware", "sidecar"])
def api(request: pytest.FixtureRequest) -> Api:
    """The monitor API in each form."""
    if request.param == "middleware":
        url: str = request.getfixturevalue("guarded_app").url
        return Api(int(url.rsplit(":", 1)[1]), "/monitor")
    return Api(request.getfixturevalue("guarded_sidecar").admin_port, "")


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_every_guarded_route_refuses_a_wrong_token(api: Api, method: str, path: str) -> None:
    for why, authorization in WRONG.items():
        status, headers, body = api.raw(method, path, authorization)
        assert TOKEN.encode()[:8] not in body, why
        if why == "NUL inside":  # the HTTP parser refuses it before any route sees it
            assert status == 400, (why, status, body[:200])
            continue
        assert status == 401, (why, status, body[:200])
        assert headers[b"www-authenticate"] == b"Bearer", why
    status, _, body = api.raw(method, path, b"Bearer " + TOKEN.encode())
    assert status == 200, body[:300]


def test_a_browser_without_the_token_gets_the_sign_in_page_and_never_the_dashboard(
    api: Api,
) -> None:
    html = b"text/html,application/xhtml+xml"
    status, _, signin = api.raw("GET", "/dashboard", None, accept=html)
    assert status == 401 and b'id="signin"' in signin and TOKEN.encode() not in signin
    status, _, page = api.raw("GET", "/dashboard", b"Bearer " + TOKEN.encode(), accept=html)
    assert status == 200 and b'id="signin"' not in page
    for why, authorization in WRONG.items():
        if authorization is not None:
            status, _, refused = api.raw("GET", "/dashboard", authorization, accept=html)
            assert status in (400, 401) and refused != page, why


@pytest.mark.parametrize("path", OPEN)
def test_read_only_routes_stay_open(api: Api, path: str) -> None:
    assert httpx.get(api.url + path, timeout=30).status_code == 200


# ------------------------------------------------------------------ constant-time comparison


def _token_comparisons(source: str) -> list[str]:
    """Every ``==``, ``!=``, ``in`` or ``startswith`` that involves something named *token*."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            ops = [op for op in node.ops if not isinstance(op, ast.Is | ast.IsNot)]
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if ops and any("token" in name.lower() for name in names):
                found.append(ast.unparse(node))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith", "find", "index")
            and "token" in ast.unparse(node).lower()
        ):
            found.append(ast.unparse(node))
    return found


def test_the_token_is_only_ever_compared_in_constant_time() -> None:
    sources = [
        # the collector's ``token`` is a flush sequence number between processes, not a secret
        *sorted(p for p in (ROOT / "middleware").rglob("*.py") if "collector" not in p.parts),
        *sorted((ROOT / "sidecar").glob("*.py")),
    ]
    for path in sources:
        assert _token_comparisons(path.read_text()) == [], path
    api = (ROOT / "middleware" / "api" / "access.py").read_text()
    assert "hmac.compare_digest(" in api
    # the dashboard's sign-in page compares nothing itself: it resends the token as the header
    signin = (ROOT / "middleware" / "api" / "static" / "signin.js").read_text()
    assert '"Bearer " + token' in signin
    assert not re.search(r"token\s*[!=]==?|[!=]==?\s*token", signin, re.IGNORECASE)


# ------------------------------------------------------------------ the admin port's address


def _other_addresses() -> list[str]:
    """Local IPv4 addresses other than 127.0.0.1: 127.0.0.2 always, and any interface's."""
    found = ["127.0.0.2"]
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and address.address != "127.0.0.1":
                found.append(address.address)
    return found


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_an_admin_port_bound_to_loopback_is_reachable_nowhere_else(
    guarded_sidecar: Sidecar,
) -> None:
    process = psutil.Process(guarded_sidecar.process.pid)
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in process.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert ("127.0.0.1", guarded_sidecar.admin_port) in listening
    assert [a for a in listening if a[1] == guarded_sidecar.admin_port] == [
        ("127.0.0.1", guarded_sidecar.admin_port)
    ]
    assert _reachable("127.0.0.1", guarded_sidecar.admin_port)
    for host in _other_addresses():
        assert not _reachable(host, guarded_sidecar.admin_port), host


def test_the_proxy_port_never_serves_the_monitor_api(
    guarded_sidecar: Sidecar, guarded_upstream: ModelServer
) -> None:
    before = len(guarded_upstream.seen())
    for method, path in [("POST", "/drift/check"), ("GET", "/dashboard"), ("GET", "/metrics")]:
        answer = httpx.request(
            method, guarded_sidecar.url + path, headers={"authorization": f"Bearer {TOKEN}"}
        )
        assert answer.status_code == 404, (path, answer.text)  # the model server's catch-all
        assert answer.json() == {"path": path}
    assert len(guarded_upstream.seen()) == before + 3


# ------------------------------------------------------------------ nowhere but the upstream


def test_userinfo_ipv6_and_upgrade_tricks_reach_only_the_upstream(
    guarded_sidecar: Sidecar, guarded_upstream: ModelServer, bystander: Bystander
) -> None:
    other = f"127.0.0.1:{bystander.port}".encode()
    start = len(guarded_upstream.seen())
    tricks = {
        b"/userinfo": b"GET http://user:pw@" + other + b"/userinfo HTTP/1.1\r\nHost: x\r\n",
        b"/at-host": b"GET http://127.0.0.1@" + other + b"/at-host HTTP/1.1\r\nHost: x\r\n",
        b"/ipv6": b"GET http://[::1]:" + str(bystander.port).encode() + b"/ipv6 HTTP/1.1\r\n"
        b"Host: [::1]\r\n",
        b"/http10": b"GET http://" + other + b"/http10 HTTP/1.0\r\nHost: " + other + b"\r\n",
        b"/websocket": b"GET /websocket HTTP/1.1\r\nHost: " + other + b"\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n",
        b"/h2c": b"GET /h2c HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, "
        b"HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        b"/proxy-headers": b"GET /proxy-headers HTTP/1.1\r\nHost: x\r\nX-Forwarded-Host: "
        + other
        + b"\r\nX-Original-URL: http://"
        + other
        + b"/\r\nX-Rewrite-URL: //"
        + other
        + b"/\r\nProxy-Authorization: Basic eDp5\r\n",
        b"/%0d%0aHost:%20evil": b"GET /%0d%0aHost:%20evil HTTP/1.1\r\nHost: x\r\n",
    }
    for expected, trick in tricks.items():
        answer = raw_request(guarded_sidecar.port, trick + b"Connection: close\r\n\r\n")
        assert answer.startswith((b"HTTP/1.1 404", b"HTTP/1.0 404")), (expected, answer[:200])
    seen = guarded_upstream.seen()[start:]
    assert [r["raw_path"] for r in seen] == [t.decode() for t in tricks]
    for request in seen:
        names = {name for name, _ in request["headers"]}
        assert "upgrade" not in names and "proxy-authorization" not in names, request
        host = [value for name, value in request["headers"] if name == "host"]
        assert host == [f"127.0.0.1:{guarded_upstream.port}"], request
    assert bystander.accepted == 0


# ------------------------------------------------------------------ without a token


def _outside_address() -> str:
    """A non-loopback address of this host, to send from: the servers still listen on loopback."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    pytest.skip("this host has no IPv4 address beyond loopback to send from")


@pytest.fixture(scope="module", params=["middleware", "sidecar"])
def open_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """The monitor API in each form with no admin token, listening on 127.0.0.1."""
    folder = tmp_path_factory.mktemp(f"open-{request.param}")
    if request.param == "middleware":
        env = {"INFERWATCH_DB": str(folder / "app.duckdb"), "INFERWATCH_ADMIN_TOKEN": ""}
        with uvicorn_process("tests.apps.model_app:app", env=env) as (_, url):
            yield Api(int(url.rsplit(":", 1)[1]), "/monitor")
        return
    model = start_model_server()
    try:
        with sidecar_process(model.url, folder) as running:
            yield Api(running.admin_port, "")
    finally:
        model.stop()


def _call(api: Api, method: str, path: str, **kwargs: Any) -> httpx.Response:
    body = LABELS if path == "/labels" else None
    return httpx.request(method, api.url + path, json=body, timeout=30, **kwargs)


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_without_a_token_loopback_clients_reach_every_route(
    open_api: Api, method: str, path: str
) -> None:
    answer = _call(open_api, method, path)
    assert answer.status_code == 200, answer.text[:300]


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_without_a_token_clients_beyond_loopback_are_refused_with_the_reason(
    open_api: Api, method: str, path: str
) -> None:
    source = _outside_address()
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as outside:
        answer = outside.request(
            method, open_api.url + path, json=LABELS if path == "/labels" else None, timeout=30
        )
    assert answer.status_code == 403, answer.text[:300]
    assert "set admin_token (INFERWATCH_ADMIN_TOKEN)" in answer.json()["error"]
    relayed = _call(open_api, method, path, headers={"X-Forwarded-For": "203.0.113.9"})
    assert relayed.status_code == 403  # a proxy on this host relayed someone else's request


def test_without_a_token_probes_and_metrics_stay_open_beyond_loopback(open_api: Api) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=_outside_address())) as outside:
        for path in ("/healthz", "/health", "/metrics", "/openapi.json"):
            assert outside.get(open_api.url + path, timeout=30).status_code == 200, path
        assert outside.get(open_api.url + "/readyz", timeout=30).status_code in (200, 503)


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_with_a_token_clients_beyond_loopback_get_in_with_it(
    api: Api, method: str, path: str
) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=_outside_address())) as outside:
        body = LABELS if path == "/labels" else None
        refused = outside.request(method, api.url + path, json=body, timeout=30)
        assert refused.status_code == 401
        answer = outside.request(
            method,
            api.url + path,
            json=body,
            timeout=30,
            headers={"authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 200, answer.text[:300]
