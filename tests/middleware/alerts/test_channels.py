"""Alert delivery against real servers on 127.0.0.1: HTTP receivers and an aiosmtpd SMTP server."""

from __future__ import annotations

import base64
import email
import email.policy
import itertools
import json
import logging
import ssl
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from prometheus_client import CollectorRegistry, generate_latest

from inferwatch import Settings
from inferwatch.middleware.alerts.channels import DeliveryError, EmailChannel, WebhookChannel
from inferwatch.middleware.alerts.delivery import MAX_BACKOFF_S, backoff_delay
from inferwatch.middleware.alerts.manager import AlertManager
from inferwatch.middleware.alerts.messages import (
    render_slack,
    render_teams,
    render_text,
    render_webhook,
)
from inferwatch.middleware.alerts.options import AlertOptions
from tests.conftest import free_port, require_tool, wait_until

# aiosmtpd warns about AUTH without TLS, which the plain-SMTP tests use on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

TOKEN = "T0ABCDEF/B0GHIJKL/xoxTopSecretToken42"
USER = "alerts@example.com"
PASSWORD = "s3cret-Pa55w0rd!"
WRONG_PASSWORD = "not-the-Pa55w0rd-at-all"
RECIPIENTS = ("ops@example.com", "ml-team@example.com")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EPISODE = ("ok", "alert", "alert", "alert", "ok", "ok")
_stamps = itertools.count()


class Receiver:
    """A threaded HTTP server that records every POST; it can fail some or hold them all."""

    def __init__(self, statuses: tuple[int, ...] = (), hold: bool = False) -> None:
        self.posts: list[dict[str, Any]] = []
        self.statuses = list(statuses)
        self.release, self.accepted = threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.accepted.set()
                receiver.release.wait()  # a held receiver accepts and then never answers
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.posts.append(
                    {"status": status, "at": time.monotonic(), "json": json.loads(body),
                     "type": self.headers["Content-Type"]}
                )  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, name: str) -> str:
        """A webhook URL whose path and query carry secrets, as real ones do."""
        return f"{self.base}/hooks/{name}/{TOKEN}?sig=sq-{name}-secretquery"

    def delivered(self) -> list[dict[str, Any]]:
        return [post["json"] for post in self.posts if post["status"] < 300]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(
            {"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "message": message,
             "authenticated": session.authenticated,
             "tls": server.transport.get_extra_info("ssl_object") is not None}
        )  # fmt: skip
        return "250 Message accepted for delivery"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    good = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=good, handled=False)  # handled=False: the server answers 535


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**options: Any) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for item in made:
        item.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def smtp() -> Iterator[Callable[..., tuple[Mailbox, int]]]:
    controllers: list[Controller] = []

    def start(
        tls: str = "none", certificate: tuple[Path, Path] | None = None
    ) -> tuple[Mailbox, int]:
        mailbox, port = Mailbox(), free_port()
        options: dict[str, Any] = {"authenticator": _authenticate, "auth_required": True}
        if tls == "none":
            options["auth_require_tls"] = False
        else:
            assert certificate is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificate)
            if tls == "starttls":  # AUTH is offered only once STARTTLS has run
                options |= {"tls_context": context, "require_starttls": True}
            else:  # the whole connection is TLS, which aiosmtpd's AUTH check cannot see
                options |= {"ssl_context": context, "auth_require_tls": False}
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        return mailbox, port

    yield start
    for controller in controllers:
        controller.stop()


def drift(bad: bool) -> dict[str, Any]:
    features = {
        name: {"kind": "numeric", "method": "jensen_shannon", "score": 0.31 if drifted else 0.02,
               "threshold": 0.1, "drifted": drifted, "rows": 4000}
        for name, drifted in (("age", bad), ("income", False))
    }  # fmt: skip
    return {
        "status": "alert" if bad else "ok",
        "checked_at": (T0 + timedelta(seconds=next(_stamps))).isoformat(),
        "drift_detected": bad, "skew_detected": False, "drifted_features": ["age"] if bad else [],
        "features": features, "prediction": {}, "schema_anomalies": [],
    }  # fmt: skip


def run(alerts: AlertManager, script: tuple[str, ...], start: int = 0) -> list[dict[str, Any]]:
    events = []
    for i, step in enumerate(script, start):
        events += alerts.evaluate(drift=drift(step == "alert"), now=T0 + timedelta(minutes=i))
    return events


def settings(**values: Any) -> Settings:
    defaults = {"alert_backoff": "20ms", "alert_timeout": "10s", "alert_source": "fraud-model",
                "alert_base_url": "https://ml.example.com/monitor"}  # fmt: skip
    return Settings.load(defaults | values, environ={})


def options(**values: Any) -> AlertOptions:
    return AlertOptions.from_settings(settings(**values))


def smtp_settings(port: int, password: str = PASSWORD) -> dict[str, Any]:
    return {"alert_smtp_host": "127.0.0.1", "alert_smtp_port": port, "alert_smtp_tls": "none",
            "alert_smtp_user": USER, "alert_smtp_password": password,
            "alert_email_to": ",".join(RECIPIENTS)}  # fmt: skip


def deliveries(alerts: AlertManager, state: str) -> dict[str, dict[str, Any]]:
    return next(e["deliveries"] for e in alerts.history() if e["state"] == state)


def test_a_drift_episode_gives_one_alert_and_one_resolve_on_every_channel(
    receiver: Callable[..., Receiver], smtp: Callable[..., tuple[Mailbox, int]]
) -> None:
    hooks = {name: receiver() for name in ("webhook", "slack", "teams")}
    mailbox, port = smtp()
    urls = {f"alert_{name}_url": hook.url(name) for name, hook in hooks.items()}
    alerts = AlertManager(options(**urls, **smtp_settings(port)))
    events = run(alerts, EPISODE)
    assert [e["state"] for e in events] == ["firing", "resolved"]
    assert alerts.close(timeout=30)

    drift_url = "https://ml.example.com/monitor/drift"
    generic = hooks["webhook"].delivered()
    assert [(b["state"], b["rule"], b["episode"]) for b in generic] == [
        ("firing", "feature_drift", events[0]["episode"]),
        ("resolved", "feature_drift", events[0]["episode"]),
    ]
    assert "deliveries" not in generic[0]
    assert "age: score 0.31 over threshold 0.1" in generic[0]["text"]
    assert (
        "Since: 2026-03-01 12:01:00 UTC" in generic[0]["text"] and drift_url in generic[0]["text"]
    )
    assert all(post["type"] == "application/json" for post in hooks["webhook"].posts)

    slack = hooks["slack"].delivered()
    assert len(slack) == 2
    assert slack[0]["text"].startswith("WARNING: Feature drift on fraud-model: 1 of 2 input")
    assert slack[1]["text"].startswith("RESOLVED: Feature drift on fraud-model after 4 min")
    fields = {f["title"]: f["value"] for f in slack[0]["attachments"][0]["fields"]}
    assert drift_url in fields["Where to look"] and fields["Since"].startswith("2026-03-01 12:01")

    teams = hooks["teams"].delivered()
    assert len(teams) == 2
    card = teams[0]["attachments"][0]
    assert (teams[0]["type"], card["contentType"]) == (
        "message", "application/vnd.microsoft.card.adaptive",
    )  # fmt: skip
    assert card["content"]["type"] == "AdaptiveCard"
    assert {"type": "Action.OpenUrl", "title": "Drift report", "url": drift_url} in card["content"][
        "actions"
    ]

    assert len(mailbox.messages) == 2
    first, second = (item["message"] for item in mailbox.messages)
    assert all(
        item["to"] == list(RECIPIENTS) and item["authenticated"] for item in mailbox.messages
    )
    assert first["Subject"].startswith("WARNING: Feature drift on fraud-model")
    plain = first.get_body(("plain",)).get_content()
    assert "age: score 0.31 over threshold 0.1" in plain and drift_url in plain
    assert f'<a href="{drift_url}">Drift report</a>' in first.get_body(("html",)).get_content()
    assert second["In-Reply-To"] == first["Message-ID"]
    assert "Was: 1 of 2 input features drifted: age" in second.get_body(("plain",)).get_content()

    for state in ("firing", "resolved"):
        assert {n: (d["status"], d["attempts"]) for n, d in deliveries(alerts, state).items()} == {
            name: ("sent", 1) for name in ("webhook", "slack", "teams", "email")
        }


def test_a_dead_channel_delays_neither_the_others_nor_the_checks(
    receiver: Callable[..., Receiver], smtp: Callable[..., tuple[Mailbox, int]]
) -> None:
    hanging, teams = receiver(hold=True), receiver()
    mailbox, port = smtp()
    alerts = AlertManager(
        options(
            alert_webhook_url=f"http://127.0.0.1:{free_port()}/hooks/{TOKEN}",  # nothing listens
            alert_slack_url=hanging.url("slack"),
            alert_teams_url=teams.url("teams"),
            alert_attempts=1000,
            alert_timeout="60s",
            **smtp_settings(port),
        )
    )
    assert [e["state"] for e in run(alerts, EPISODE[:3])] == ["firing"]
    wait_until(lambda: len(teams.delivered()) == 1 and len(mailbox.messages) == 1)
    wait_until(lambda: deliveries(alerts, "firing")["webhook"]["attempts"] >= 3)
    wait_until(hanging.accepted.is_set)
    firing = deliveries(alerts, "firing")
    assert firing["webhook"]["status"] == "retrying"
    assert "ConnectError" in firing["webhook"]["error"]
    assert firing["slack"]["status"] == "pending"

    # evaluate() hands the resolve over and returns while Slack still holds the first message
    assert [e["state"] for e in run(alerts, EPISODE[3:], start=3)] == ["resolved"]
    wait_until(lambda: len(teams.delivered()) == 2 and len(mailbox.messages) == 2)
    assert not hanging.release.is_set() and hanging.posts == []
    assert deliveries(alerts, "firing")["webhook"]["status"] == "retrying"

    hanging.release.set()
    wait_until(lambda: len(hanging.delivered()) == 2)
    assert [body["attachments"][0]["title"] for body in hanging.delivered()] == [
        "Feature drift (firing)", "Feature drift (resolved)",
    ]  # fmt: skip
    assert not alerts.close(timeout=0.5)  # the webhook never came back: given up at shutdown
    wait_until(lambda: deliveries(alerts, "resolved")["webhook"]["status"] == "failed")
    assert deliveries(alerts, "firing")["webhook"]["status"] == "failed"
    counts = {c["name"]: c for c in alerts.channels()}
    assert counts["webhook"]["failed"] == 2 and counts["webhook"]["retries"] >= 2
    assert counts["email"]["sent"] == counts["teams"]["sent"] == counts["slack"]["sent"] == 2


def test_failed_attempts_are_retried_with_growing_waits(
    receiver: Callable[..., Receiver],
) -> None:
    flaky, gone = receiver(statuses=(503, 503, 500)), receiver(statuses=(404,))
    alerts = AlertManager(
        options(
            alert_webhook_url=flaky.url("webhook"),
            alert_teams_url=gone.url("teams"),
            alert_backoff="100ms",
        )
    )
    run(alerts, EPISODE[:3])
    assert alerts.close(timeout=30)
    assert len(flaky.delivered()) == 1
    arrived = [post["at"] for post in flaky.posts]
    for attempt, (before, after) in enumerate(itertools.pairwise(arrived), 1):
        assert after - before >= backoff_delay(0.1, attempt)  # a wait never ends early
    assert deliveries(alerts, "firing")["webhook"] == {
        "status": "sent",
        "attempts": 4,
        "error": None,
    }
    # a 404 will not heal by itself: given up at once
    assert deliveries(alerts, "firing")["teams"] == {
        "status": "failed", "attempts": 1, "error": "HTTP 404 Not Found",
    }  # fmt: skip
    assert [backoff_delay(2.0, n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert backoff_delay(2.0, 30) == MAX_BACKOFF_S


def test_a_full_queue_drops_for_that_channel_only(receiver: Callable[..., Receiver]) -> None:
    hanging, fine = receiver(hold=True), receiver()
    alerts = AlertManager(
        options(alert_slack_url=hanging.url("slack"), alert_teams_url=fine.url("teams"),
                 alert_for=1, alert_cooldown=0),
        queue_size=1,
    )  # fmt: skip
    run(alerts, ("alert",))
    wait_until(hanging.accepted.is_set)  # the first message is in flight, the queue is empty
    for i, step in enumerate(("ok", "alert", "ok", "alert", "ok"), 1):
        run(alerts, (step,), start=i)
        wait_until(lambda i=i: len(fine.delivered()) == i + 1)  # Teams keeps up, one by one
    assert {c["name"]: c["dropped"] for c in alerts.channels()} == {"slack": 4, "teams": 0}
    hanging.release.set()
    assert alerts.close(timeout=30)
    assert len(hanging.delivered()) == 2


@pytest.mark.parametrize("tls", ["starttls", "tls"])
def test_email_over_tls_with_login(
    tls: str, smtp: Callable[..., tuple[Mailbox, int]], certificate: tuple[Path, Path]
) -> None:
    mailbox, port = smtp(tls, certificate)
    channel = EmailChannel(
        "127.0.0.1", port, tls=tls, user=USER, password=PASSWORD, recipients=RECIPIENTS,
        ssl_context=ssl.create_default_context(cafile=str(certificate[0])),
    )  # fmt: skip
    alerts = AlertManager(options(), channels=[channel])
    run(alerts, EPISODE)
    assert alerts.close(timeout=30)
    assert [(m["tls"], m["authenticated"]) for m in mailbox.messages] == [(True, True)] * 2
    assert mailbox.messages[0]["from"] == USER


def test_secrets_stay_out_of_logs_answers_and_errors(
    receiver: Callable[..., Receiver],
    smtp: Callable[..., tuple[Mailbox, int]],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    # The test SMTP server's own debug log shows the AUTH exchange; that server is not ours.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    good, failing = receiver(), receiver(statuses=(500,) * 10)
    mailbox, port = smtp()
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "slack").write_text(good.url("slack") + "\n")
    dead = f"http://127.0.0.1:{free_port()}/hooks/{TOKEN}-teams"
    configured = settings(
        alert_webhook_url=failing.url("webhook"), alert_slack_url=f"file:{tmp_path / 'slack'}",
        alert_teams_url=dead, alert_attempts=2,
        **smtp_settings(port, password=f"file:{tmp_path / 'password'}"),
    )  # fmt: skip
    refused = settings(**smtp_settings(port, password=WRONG_PASSWORD))
    managers = [AlertManager(AlertOptions.from_settings(s)) for s in (configured, refused)]
    for alerts in managers:
        run(alerts, EPISODE)
        alerts.close(timeout=30)
    assert len(good.delivered()) == 2 and len(mailbox.messages) == 2  # secrets from files work
    assert deliveries(managers[1], "firing")["email"]["error"] == "SMTP login refused (535)"
    assert deliveries(managers[0], "firing")["webhook"]["error"] == "HTTP 500 Internal Server Error"
    assert any(r.name == "httpx" for r in caplog.records)  # httpx logged its requests...
    assert f"{good.base}/***" in caplog.text  # ...and the scrubber masked them

    registry = CollectorRegistry()
    for alerts in managers:
        registry.register(type("C", (), {"collect": alerts.metrics})())
    texts = [
        caplog.text,
        *(record.getMessage() + (record.exc_text or "") for record in caplog.records),
        *(json.dumps([m.history(), m.active(), m.channels()]) for m in managers),
        repr(configured), repr(refused), json.dumps(configured.public()),
        *(repr(AlertOptions.from_settings(s)) for s in (configured, refused)),
        generate_latest(registry).decode(),
    ]  # fmt: skip
    secrets = [TOKEN, "secretquery", PASSWORD, WRONG_PASSWORD, "xoxTopSecret"]
    secrets += [base64.b64encode(f"\0{USER}\0{p}".encode()).decode() for p in (PASSWORD,)]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    targets = {c["name"]: c["target"] for c in managers[0].channels()}
    assert targets == {
        "webhook": f"{failing.base}/***", "slack": f"{good.base}/***",
        "teams": dead.split("/hooks")[0] + "/***", "email": f"smtp://127.0.0.1:{port} (none)",
    }  # fmt: skip


def test_a_delivery_error_and_its_traceback_hold_no_secret(
    receiver: Callable[..., Receiver],
) -> None:
    refused = f"http://127.0.0.1:{free_port()}/hooks/{TOKEN}?sig=sq-secretquery"
    failing = receiver(statuses=(502,))
    alerts = AlertManager(options(alert_for=1), channels=[])
    event = {k: v for k, v in run(alerts, ("alert",))[0].items() if k != "deliveries"}
    for url in (refused, failing.url("webhook")):
        channel = WebhookChannel("webhook", url, render_webhook, timeout=5)
        with pytest.raises(DeliveryError) as info:
            channel.send(event)
        channel.close()
        shown = "".join(traceback.format_exception(info.value)) + repr(info.value)
        assert TOKEN not in shown and "secretquery" not in shown
        assert info.value.retryable


def test_without_a_base_url_messages_name_the_paths() -> None:
    chosen = AlertOptions.from_settings(Settings.load({"alert_for": 1}, environ={}))
    alerts = AlertManager(chosen, channels=[])
    event = {k: v for k, v in run(alerts, ("alert",))[0].items() if k != "deliveries"}
    assert "Drift report: GET /drift on the monitor API" in render_text(event)
    card = render_teams(event)["attachments"][0]["content"]
    assert card["actions"] == []
    assert "GET /dashboard on the monitor API" in json.dumps(card["body"])
    assert "title_link" not in render_slack(event)["attachments"][0]
