"""The sidecar forwards to its upstream and nowhere else, whatever the request says.

A bystander listener on another port stands in for "anything else": after every trick below it
must have seen no connection, and the model server must have seen only its own requests.
"""

from __future__ import annotations

import httpx

from tests.sidecar.conftest import Bystander, ModelServer, Sidecar, raw_request


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_absolute_form_targets_and_odd_hosts_reach_only_the_upstream(
    sidecar: Sidecar, model: ModelServer, bystander: Bystander
) -> None:
    other = f"127.0.0.1:{bystander.port}".encode()
    tricks = [
        b"GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\n",
        b"GET http://" + other + b"/absolute HTTP/1.1\r\nHost: " + other + b"\r\n",
        b"GET https://" + other + b"/tls HTTP/1.1\r\nHost: " + other + b"\r\n",
        b"GET /host-header HTTP/1.1\r\nHost: " + other + b"\r\n",
        b"GET /forwarded HTTP/1.1\r\nHost: x\r\nX-Forwarded-Host: " + other + b"\r\n"
        b"Forwarded: host=" + other + b"\r\n",
        b"GET //" + other + b"/network-path HTTP/1.1\r\nHost: x\r\n",
        b"GET /duplicate-host HTTP/1.1\r\nHost: x\r\nHost: " + other + b"\r\n",
    ]
    for trick in tricks:
        answer = raw_request(sidecar.port, trick + b"Connection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 "), (trick, answer)
        assert _status(answer) == 404, (trick, answer)  # the model server's catch-all route

    seen = model.seen()
    assert [request["path"] for request in seen] == [
        "/steal",
        "/absolute",
        "/tls",
        "/host-header",
        "/forwarded",
        f"/127.0.0.1:{bystander.port}/network-path",
        "/duplicate-host",
    ]
    for request in seen:
        host = [value for name, value in request["headers"] if name == "host"]
        assert host == [f"127.0.0.1:{model.port}"], request
    assert bystander.accepted == 0


def test_dot_segments_and_connect_are_refused(
    sidecar: Sidecar, model: ModelServer, bystander: Bystander
) -> None:
    other = f"127.0.0.1:{bystander.port}".encode()
    refused = [
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n",
        b"GET /v1/../../" + other + b"/x HTTP/1.1\r\nHost: x\r\n",
        b"GET /%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: x\r\n",
        b"GET /a/%2E%2E%2F%2E%2E%2Fb HTTP/1.1\r\nHost: x\r\n",
        b"GET /a/..%5c..%5cb HTTP/1.1\r\nHost: x\r\n",
        b"GET /./v1 HTTP/1.1\r\nHost: x\r\n",
        b"CONNECT " + other + b" HTTP/1.1\r\nHost: " + other + b"\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n",
        b"GET " + other + b" HTTP/1.1\r\nHost: x\r\n",
    ]
    for trick in refused:
        answer = raw_request(sidecar.port, trick + b"Connection: close\r\n\r\n")
        assert _status(answer) in (400, 405), (trick, answer)
    assert model.seen() == []
    assert bystander.accepted == 0
    # An ordinary request still goes through, to the upstream only.
    assert httpx.get(sidecar.url + "/echo", timeout=5).status_code == 200
    assert [r["path"] for r in model.seen()] == ["/echo"]
    assert bystander.accepted == 0
