"""Alert channels: a JSON webhook, Slack-compatible and Teams webhooks, and SMTP email.

Webhook URLs carry tokens and are treated as secrets, like the SMTP password: they are masked
wherever a channel is described, and every registered secret is scrubbed from error texts and from
the log records of the inferwatch, httpx and httpcore loggers. Queues, threads and retries are in
:mod:`inferwatch.middleware.alerts.delivery`; message texts in
:mod:`inferwatch.middleware.alerts.messages`.
"""

from __future__ import annotations

import abc
import base64
import email.policy
import logging
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import MonitorError
from .messages import (
    headline,
    render_html,
    render_slack,
    render_teams,
    render_text,
    render_webhook,
)
from .options import AlertOptions

__all__ = [
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "WebhookChannel",
    "build_channels",
    "mask_url",
    "read_secret",
    "scrub",
]

logger = logging.getLogger("inferwatch")

_SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}
# The stdlib folds a long Subject onto its own line, which readers then show with a leading space.
_POLICY = email.policy.default.clone(max_line_length=998)


class _Scrubber(logging.Filter):
    """Replaces every registered secret in texts and in the log records that pass through it."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._pairs: tuple[tuple[str, str], ...] = ()

    def add(self, secret: str, mask: str) -> None:
        if len(secret) < 6:  # too short to be a token; replacing it would mangle ordinary words
            return
        with self._lock:
            pairs = {**dict(self._pairs), secret: mask}
            self._pairs = tuple(sorted(pairs.items(), key=lambda item: -len(item[0])))

    def scrub(self, text: str) -> str:
        for secret, mask in self._pairs:
            if secret in text:
                text = text.replace(secret, mask)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._pairs:
            return True
        try:
            message = record.getMessage()
            clean = self.scrub(message)
            if clean != message:
                record.msg, record.args = clean, ()
            if record.exc_info and not record.exc_text:
                formatted = logging.Formatter().formatException(record.exc_info)
                record.exc_text = self.scrub(formatted)
        except Exception:  # a malformed record is the logging module's to report, not ours
            pass
        return True


_SCRUBBER = _Scrubber()
for _name in ("inferwatch", "httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_SCRUBBER)


def scrub(text: str) -> str:
    """``text`` with every secret that a channel registered replaced by its masked form."""
    return _SCRUBBER.scrub(text)


def mask_url(url: str) -> str:
    """Scheme and host of ``url`` only: ``https://hooks.slack.com/***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    return f"{parts.scheme}://{host}{port}/***"


def read_secret(setting: str, value: str | None) -> str | None:
    """A secret setting's value; ``file:PATH`` reads it from that file (final newline dropped)."""
    if value is None or not value.startswith("file:"):
        return value
    path = value[len("file:") :]
    try:
        text = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        problem = f"cannot read {path}: {exc.strerror}"
        raise MonitorError(f"Bad value for setting {setting}: {problem}.") from None
    if not text:
        raise MonitorError(f"Bad value for setting {setting}: {path} is empty.")
    return text


class DeliveryError(Exception):
    """One failed delivery attempt, described without secrets."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(scrub(message))
        self.retryable = retryable
        self.retry_after = retry_after


class Channel(abc.ABC):
    """Where alerts go. ``send`` delivers one event or raises :class:`DeliveryError`."""

    name: str = "channel"
    target: str = ""

    @abc.abstractmethod
    def send(self, event: Mapping[str, Any]) -> None:
        """Deliver one event, or raise :class:`DeliveryError`."""

    def close(self) -> None:  # noqa: B027 - a hook: channels without connections keep it
        """Release connections; the channel is not used afterwards."""


class WebhookChannel(Channel):
    """POSTs a JSON body, rendered from the event by ``render``, to one webhook URL."""

    def __init__(
        self,
        name: str,
        url: str,
        render: Callable[[Mapping[str, Any]], dict[str, Any]],
        *,
        timeout: float = 10.0,
        setting: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise MonitorError(
                f"Bad value for setting {setting or name}: it must be an http:// or https:// URL."
            )
        # Imported here: a collector without webhooks starts 0.1 s sooner without httpx.
        import httpx

        self.name, self.target = name, mask_url(url)
        _SCRUBBER.add(url, self.target)
        _SCRUBBER.add(str(httpx.URL(url)), self.target)
        _SCRUBBER.add(url[len(f"{parts.scheme}://{parts.netloc}") :], "/***")
        self._url, self._render = url, render
        self._client = httpx.Client(
            timeout=timeout, follow_redirects=False, headers={"User-Agent": "inferwatch"}
        )

    def send(self, event: Mapping[str, Any]) -> None:
        import httpx

        try:
            response = self._client.post(self._url, json=self._render(event))
        except httpx.HTTPError as exc:
            # "from None": the chained httpx exception holds the request, and with it the URL.
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        if response.status_code >= 300:
            code = response.status_code
            retry_after = response.headers.get("retry-after", "")
            raise DeliveryError(
                f"HTTP {code} {response.reason_phrase}",
                retryable=code in {408, 425, 429} or code >= 500,
                retry_after=float(retry_after) if retry_after.isdigit() else None,
            )

    def close(self) -> None:
        self._client.close()


class EmailChannel(Channel):
    """Sends each event as a plain text and HTML email over SMTP (STARTTLS, TLS or neither)."""

    def __init__(
        self,
        host: str,
        port: int | None,
        *,
        tls: str = "starttls",
        user: str | None = None,
        password: str | None = None,
        sender: str | None = None,
        recipients: Sequence[str] = (),
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.tls = host, port or _SMTP_PORTS[tls], tls
        self.user, self._password, self.recipients = user, password, list(recipients)
        domain = socket.gethostname() or "localhost"
        self.sender = sender or (user if user and "@" in user else f"inferwatch@{domain}")
        self.domain = self.sender.rpartition("@")[2] or domain
        self.timeout, self._context = timeout, ssl_context or ssl.create_default_context()
        self.name, self.target = "email", f"smtp://{host}:{self.port} ({tls})"
        if password:
            _SCRUBBER.add(password, "***")
            for plain in (f"\0{user}\0{password}", password):
                _SCRUBBER.add(base64.b64encode(plain.encode()).decode(), "***")

    def message(self, event: Mapping[str, Any]) -> EmailMessage:
        """The email for ``event``; a resolve is threaded under its alert."""
        message = EmailMessage(policy=_POLICY)
        message["Subject"] = " ".join(headline(event).split())[:180]
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = f"<{event['id']}@{self.domain}>"
        if event["state"] == "resolved":
            message["In-Reply-To"] = message["References"] = (
                f"<{event['episode']}-firing@{self.domain}>"
            )
        message.set_content(render_text(event))
        message.add_alternative(render_html(event), subtype="html")
        return message

    def send(self, event: Mapping[str, Any]) -> None:
        try:
            smtp_class = smtplib.SMTP_SSL if self.tls == "tls" else smtplib.SMTP
            extra = {"context": self._context} if self.tls == "tls" else {}
            with smtp_class(self.host, self.port, timeout=self.timeout, **extra) as smtp:
                if self.tls == "starttls":
                    smtp.starttls(context=self._context)
                if self.user:
                    smtp.login(self.user, self._password or "")
                smtp.send_message(self.message(event), self.sender, self.recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"SMTP login refused ({exc.smtp_code})", retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error
            text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            code = exc.smtp_code
            raise DeliveryError(f"SMTP {code} {text}", retryable=code < 500) from None
        except smtplib.SMTPNotSupportedError as exc:  # e.g. no AUTH offered: a setup problem
            raise DeliveryError(f"SMTP server: {exc}", retryable=False) from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError("SMTP server refused every recipient", retryable=False) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from None


def build_channels(options: AlertOptions) -> list[Channel]:
    """The channels that ``options`` configure; a bad value raises :class:`MonitorError`."""
    urls = {
        name: read_secret(f"alert_{name}_url", getattr(options, f"alert_{name}_url"))
        for name in ("webhook", "slack", "teams")
    }
    email = _email_channel(options)  # validated before any webhook client is opened
    renders = {"webhook": render_webhook, "slack": render_slack, "teams": render_teams}
    channels: list[Channel] = [
        WebhookChannel(name, url, renders[name], timeout=options.alert_timeout,
                       setting=f"alert_{name}_url")
        for name, url in urls.items()
        if url
    ]  # fmt: skip
    return channels if email is None else [*channels, email]


def _email_channel(options: AlertOptions) -> EmailChannel | None:
    if options.alert_smtp_host is None:
        if options.alert_email_to:
            raise MonitorError("Bad value for setting alert_email_to: alert_smtp_host is not set.")
        return None
    if options.alert_smtp_tls not in _SMTP_PORTS:
        raise MonitorError("Bad value for setting alert_smtp_tls: use starttls, tls or none.")
    if not options.alert_email_to:
        raise MonitorError("Bad value for setting alert_email_to: give at least one recipient.")
    password = read_secret("alert_smtp_password", options.alert_smtp_password)
    if password and not options.alert_smtp_user:
        raise MonitorError("Bad value for setting alert_smtp_password: alert_smtp_user is not set.")
    return EmailChannel(
        options.alert_smtp_host,
        options.alert_smtp_port or None,
        tls=options.alert_smtp_tls,
        user=options.alert_smtp_user,
        password=password,
        sender=options.alert_email_from,
        recipients=options.alert_email_to,
        timeout=options.alert_timeout,
    )
